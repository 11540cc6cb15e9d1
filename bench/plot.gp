# plot.gp — one benchmark run over time: connections, heartbeats/s, RTT p99, server RSS and CPU.
# Usage: gnuplot -e "datafile='run.dat'; outfile='run.png'; plottitle='...'" bench/plot.gp
# Columns of datafile (written by bench/run.py; '?' = no value that second):
#   1 t_s  2 conns  3 hb_per_s  4 rtt_p99_us  5 rss_mib  6 cpu_pct  7 slab_mib
if (!exists("datafile")) datafile = 'run.dat'
if (!exists("outfile")) outfile = 'run.png'
if (!exists("plottitle")) plottitle = datafile
if (!exists("have_conns")) have_conns = 1
if (!exists("have_hb")) have_hb = 1
if (!exists("have_rtt")) have_rtt = 1
if (!exists("rtt_title")) rtt_title = "RTT p99 (us)"

set terminal pngcairo size 1200,900 font ",10"
set output outfile
set datafile missing '?'
set key top left
set grid
set xlabel "seconds since the load generator started"
set multiplot layout 2,2 title plottitle

# A panel without data shows a note instead (gnuplot refuses to plot only undefined points).
set title "connections"
set format y "%.1s%c"
if (have_conns) {
    plot datafile using 1:2 with lines lw 2 title "open connections"
} else {
    set label 1 "no connection count reported" at graph 0.5, 0.5 center
    plot [0:1] [0:1] NaN notitle
    unset label 1
}

set title "heartbeats per second"
if (have_hb) {
    plot datafile using 1:3 with lines lw 2 title "heartbeats/s"
} else {
    set label 1 "no heartbeat rate reported" at graph 0.5, 0.5 center
    plot [0:1] [0:1] NaN notitle
    unset label 1
}

set title rtt_title
set format y "%g"
if (have_rtt) {
    set logscale y
    plot datafile using 1:4 with linespoints pt 7 ps 0.4 title "RTT p99 us"
    unset logscale y
} else {
    set label 1 "no RTT reported" at graph 0.5, 0.5 center
    plot [0:1] [0:1] NaN notitle
    unset label 1
}

set title "server memory and CPU"
set ylabel "MiB"
set yrange [0:*]
set y2label "% of one core"
set ytics nomirror
set y2tics
set y2range [0:*]
plot datafile using 1:5 axes x1y1 with lines lw 2 title "server RSS (MiB)", \
     datafile using 1:6 axes x1y2 with lines lw 1 title "server CPU (%)"
unset multiplot
