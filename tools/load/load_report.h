/* load_report.h — ringbeat-load results: the printed summary and the JSON file. */
#ifndef RB_LOAD_REPORT_H
#define RB_LOAD_REPORT_H

#include "load.h"

/* The human summary on stdout. connect_rate: connections established per second of ramp. */
void load_print_summary(const struct load_cfg *cfg, const struct load_result *r,
                        double connect_rate);
/* The results as JSON at path; 0 or -errno. */
int load_write_json(const char *path, const struct load_cfg *cfg, const struct load_result *r,
                    double connect_rate);

#endif
