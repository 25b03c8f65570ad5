# T_D against false offlines with and without probes (docs/design.md rule 9):
# offline_after swept from 2.5 to 5 s, one panel per population.
# gnuplot -e "datadir='DIR'; outfile='FILE.png'" probes.gp
set terminal pngcairo size 1100,520 font "sans,10"
set output outfile
set multiplot layout 1,2 title "Push/pull checks: detection time vs false offlines (h = 1 s, tick 100 ms; silent disconnects; simulator, benchmarks/detection.sh)"
set xlabel "mean detection time T_D (s)"
set ylabel "false offlines per 10^4 transitions"
set logscale y
set grid
set key top right
set style data linespoints
files = "gauss200-2% bursty-2%"
titles = "'2% independent loss, Gaussian jitter sd 200 ms' 'bursts (GE 2%, bursts of 2), Gaussian sd 100 ms'"
do for [i=1:2] {
  f = sprintf("%s/probes-%s.dat", datadir, word(files, i))
  set title word(titles, i)
  # A point with no false offline cannot sit on a log scale: drawn at 0.1.
  plot f index 0 using ($3/1000):($7 > 0 ? $7 : 0.1) title "waiting only: offline\\_after 2.5..5 s" pt 7 lw 2, \
       f index 1 using ($3/1000):($7 > 0 ? $7 : 0.1) title "with probes at 2, 2.5, 3, 3.5 s" pt 5 lw 2
}
unset multiplot
