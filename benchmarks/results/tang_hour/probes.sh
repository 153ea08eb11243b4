C="--tie --head adaptive --cutoffs 1000"
./probe.sh a256 --layers 2 --hidden 256 --embed 256 $C
./probe.sh a384 --layers 2 --hidden 384 --embed 384 $C
./probe.sh a512 --layers 2 --hidden 512 --embed 512 $C
./probe.sh g512 --cell gru --layers 2 --hidden 512 --embed 512 $C
./probe.sh a1x768 --layers 1 --hidden 768 --embed 768 $C
./probe.sh a512c2 --layers 2 --hidden 512 --embed 512 --tie --head adaptive --cutoffs 1000,2500
