# T_D against false offlines: fixed thresholds (offline_after swept) and the
# phi-accrual detector (threshold swept), one panel per population.
# gnuplot -e "datadir='DIR'; outfile='FILE.png'" detection.gp
set terminal pngcairo size 1500,520 font "sans,10"
set output outfile
set multiplot layout 1,3 title "Detection time vs false offlines (h = 1 s, tick 100 ms; silent disconnects; simulator, benchmarks/detection.sh)"
set xlabel "mean detection time T_D (s)"
set ylabel "false offlines per device-hour"
set logscale y
set grid
set key top right
set style data linespoints
files = "bursty-2% regimes-2% mixed"
titles = "'short bursts (GE 2%, bursts of 2)' 'long regimes (GE 2%, bad periods of 60 s at 30%)' 'mixed: 70% good links, 30% bad'"
do for [i=1:3] {
  f = sprintf("%s/sweep-%s.dat", datadir, word(files, i))
  set title word(titles, i)
  plot f index 0 using ($3/1000):6 title "fixed offline\\_after 2..5 s" pt 7 lw 2, \
       f index 1 using ($3/1000):6 title "phi 2..8, all devices" pt 5 lw 2, \
       f index 2 using ($3/1000):6 title "phi 2..8, web+desktop (mobile fixed)" pt 9 lw 2
}
unset multiplot
