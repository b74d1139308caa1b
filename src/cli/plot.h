/* `livemig plot`: a timeline drawn with gnuplot (plot.c). */
#ifndef LM_CLI_PLOT_H
#define LM_CLI_PLOT_H

/* argv[1] is "plot". Returns the exit status. */
int cli_plot(int argc, char **argv);

#endif
