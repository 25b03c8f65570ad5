# Throughput and memory against devices, for the four systems of compare_bench.
# gnuplot -e "csv='FILE.csv'; outfile='FILE.png'" compare.gp
set terminal pngcairo size 1200,480 font "sans,10"
set output outfile
set datafile separator ","
set multiplot layout 1,2 title "presence vs the seed design (one core; benchmarks/compare.sh)"
set logscale x
set logscale y
set grid
set xlabel "devices"
set key bottom left
set style data linespoints
systems = "presence-handle presence-keyed naive redis"
names = "'presence, handle' 'presence, keyed' 'seed design in process (map + multimap)' 'seed design in Redis (HSET + ZADD, pipelined)'"
set title "heartbeats per CPU-second (Redis: client + server CPU)"
set ylabel "heartbeats / CPU-s"
plot for [i=1:4] csv using (strcol(1) eq word(systems, i) ? $2 : NaN):($7 > 0 ? $2 / ($6 + $7) : $4) every ::1 title word(names, i) lw 2 pt 7
set title "memory per device (mallinfo2; Redis: INFO used_memory)"
set ylabel "bytes / device"
set key top right
plot for [i=1:4] csv using (strcol(1) eq word(systems, i) ? $2 : NaN):5 every ::1 title word(names, i) lw 2 pt 7
unset multiplot
