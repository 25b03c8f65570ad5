# Throughput and memory against devices, for the systems of compare_bench.
# gnuplot -e "csv='FILE.csv'; outfile='FILE.png'" compare.gp
set terminal pngcairo size 1200,480 font "sans,10" noenhanced
set output outfile
set datafile separator ","
set multiplot layout 1,2 title "presence vs the seed design (one core; benchmarks/compare.sh)"
set logscale x
set logscale y
set xrange [5e4:2e7]
set grid
set xlabel "devices"
set style data linespoints
systems = "presence-handle presence-many presence-keyed presence-keyed-many naive redis"
names = "'presence, handle (Beat)' 'presence, handles in batches (BeatMany)' 'presence, keyed (Signal)' 'presence, keyed in batches (SignalBatch)' 'seed design in process (map + multimap)' 'seed design in Redis (HSET + ZADD, pipelined)'"
rows(i) = sprintf("< grep '^%s,' '%s'", word(systems, i), csv)
set title "heartbeats per CPU-second (Redis: client + server CPU)"
set ylabel "heartbeats / CPU-s"
set key bottom left
plot for [i=1:6] rows(i) using 2:($7 > 0 ? $2 / ($6 + $7) : $4) title word(names, i) lw 2 pt 7
set title "memory per device (mallinfo2; Redis: INFO used_memory)"
set ylabel "bytes / device"
set yrange [50:1000]
set key top right
plot for [i=1:6] rows(i) using 2:5 title word(names, i) lw 2 pt 7
unset multiplot
