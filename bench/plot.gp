# plot.gp — one benchmark run over time: connections, heartbeats/s, RTT, lateness, RSS and CPU.
# Usage: gnuplot -e "datafile='run.dat'; outfile='run.png'; plottitle='...'" bench/plot.gp
# Columns of datafile (written by bench/run.py; '?' = no value that second):
#   1 t_s  2 conns  3 hb_per_s  4 rtt_p99_us  5 rss_mib  6 cpu_pct  7 slab_mib  8 rtt_p50_us
#   9 rtt_p99_cum_us  10 late_p50_ms  11 late_p99_ms  12 late_p99_cum_ms  13 late_n
#   14 load_cpu_pct
# RTT and lateness (4, 8, 10, 11) are per sampling window; 9 and 12 are cumulative since the server
# started (the whole-run figure, drawn as one dashed line).
if (!exists("datafile")) datafile = 'run.dat'
if (!exists("outfile")) outfile = 'run.png'
if (!exists("plottitle")) plottitle = datafile
if (!exists("have_conns")) have_conns = 1
if (!exists("have_hb")) have_hb = 1
if (!exists("have_rtt")) have_rtt = 1
if (!exists("have_late")) have_late = 0
if (!exists("rtt_title")) rtt_title = "RTT (us), per sampling window"

set terminal pngcairo size 1200,1200 font ",10"
set output outfile
set datafile missing '?'
set key top left
set grid
set xlabel "seconds since the load generator started"
set xrange [0:*]
set multiplot layout 3,2 title plottitle

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
    plot datafile using 1:4 with linespoints pt 7 ps 0.4 lw 1.5 title "p99 per window", \
         datafile using 1:8 with linespoints pt 7 ps 0.3 lw 1 title "p50 per window", \
         datafile using 1:9 with lines dt 2 lw 1 lc rgb "gray40" title "p99 whole run (cumulative)"
    unset logscale y
} else {
    set label 1 "no RTT reported" at graph 0.5, 0.5 center
    plot [0:1] [0:1] NaN notitle
    unset label 1
}

set title "detection lateness (ms), server histogram, per sampling window"
if (have_late) {
    set logscale y
    set yrange [0.5:*]
    set offsets 0, 0, graph 0.25, 0
    set key bottom right
    plot datafile using 1:($11 > 0 ? $11 : 0.5) with points pt 7 ps 0.6 title "p99 per window (0 drawn at 0.5)", \
         datafile using 1:($10 > 0 ? $10 : 0.5) with points pt 6 ps 0.6 title "p50 per window", \
         datafile using 1:($12 > 0 ? $12 : 0.5) with lines dt 2 lw 1 lc rgb "gray40" title "p99 whole run (cumulative)"
    unset logscale y
    set yrange [*:*]
    set offsets 0, 0, 0, 0
    set key top left
} else {
    set label 1 "no detection in the run" at graph 0.5, 0.5 center
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
     datafile using 1:6 axes x1y2 with lines lw 1 title "server CPU (%)", \
     datafile using 1:14 axes x1y2 with lines lw 1 title "load generator CPU (%)"
unset y2label
unset y2tics
set ytics mirror
unset ylabel

set title "dead peers detected by the server, per sampling window"
set yrange [0:*]
if (have_late) {
    plot datafile using 1:13 with impulses lw 2 title "detections"
} else {
    set label 1 "no detection in the run" at graph 0.5, 0.5 center
    plot [0:1] [0:1] NaN notitle
    unset label 1
}
unset multiplot
