/*
driver.h: pieces of the training main loop that both trainers share.

Contract:
- training_diverged(...) is the NaN stop. Given the step's loss, gradient norm
  and the parameters' norm after the update (pass 0 when the update did not
  run), it returns 0 when all are finite. Otherwise it prints
  "error: the <loss | gradient norm | parameters after the update> is
  <NaN | infinite> at step N ...: training diverged" naming the last good
  checkpoint (or the model the run started from), logs an {"step", "error"}
  record, and returns 1: the caller stops without saving, so no checkpoint
  with a non-finite value is ever written and the last good one stays as it
  was. The loss and gradient norm are checked before the update (which then
  does not run), the parameters after it, since a finite gradient with a huge
  learning rate or weight decay can still overflow them (-l 1e38 -c 10).
*/
#ifndef LLMC_DRIVER_H
#define LLMC_DRIVER_H

#include <math.h>
#include <stdio.h>

#include "logger.h"
#include "utils.h"

static inline int training_diverged(Logger* logger, Json* j, int step, float loss, float grad_norm,
                                    double param_norm, float lr, const char* out_dir, int last_saved,
                                    const char* start_model) {
    const char* what;
    double bad;
    if (!isfinite(loss)) { what = "loss"; bad = loss; }
    else if (!isfinite(grad_norm)) { what = "gradient norm"; bad = grad_norm; }
    else if (!isfinite(param_norm)) { what = "parameters after the update"; bad = param_norm; }
    else { return 0; }
    char* last = last_saved >= 0 ? str_printf("%s/model_%06d.bin", out_dir, last_saved) : NULL;
    fflush(stdout);
    fprintf(stderr, "error: the %s %s %s at step %d (loss %g, grad norm %g, lr %g): training diverged. "
            "Stopping without saving; %s%s. Try a lower -l, --weight-decay or --grad-clip.\n", what,
            what[0] == 'p' ? "are" : "is", isnan(bad) ? "NaN" : "infinite", step, (double)loss,
            (double)grad_norm, (double)lr,
            last ? "the last good checkpoint is " : "no checkpoint of this run was saved; it started from ",
            last ? last : start_model);
    if (logger->fp) {
        char msg[64];
        snprintf(msg, sizeof(msg), "%s %s not finite", what, what[0] == 'p' ? "are" : "is");
        json_begin(j);
        json_key_int(j, "step", step);
        json_key_string(j, "error", msg);
        json_key_float(j, "train_loss", loss);
        json_key_float(j, "grad_norm", grad_norm);
        json_end(j);
        logger_write(logger, j);
    }
    free(last);
    return 1;
}

#endif // LLMC_DRIVER_H
