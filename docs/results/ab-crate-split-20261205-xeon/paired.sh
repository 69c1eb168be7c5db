#!/bin/bash
# Row by row: the previous head, then this head, each row in its own pair of processes.
date > /tmp/ab/paired.times
for id in step/mnist-ips step/cqu-ips-m12 step/cqu-dbps step/cqu-drop step/cqu-ips-m108 step/mnist-ips-3600 selection/mnist-900 selection/mnist-3600 selection/mnist-14400 encoder/mnist-native encoder/mnist-module encoder/cqu-native encoder/cqu-module inference/cqu-ips inference/cqu-dbps; do
  tag=$(echo $id | tr / -)
  (cd /work/ab-old && /tmp/xtask-old bench --quick --only $id --out /tmp/ab/p-old/$tag > /tmp/ab/p-old-$tag.log 2>&1)
  (cd /work/main && /tmp/xtask-new bench --quick --only $id --out /tmp/ab/p-new/$tag > /tmp/ab/p-new-$tag.log 2>&1)
  echo "$id $(date +%T)" >> /tmp/ab/paired.times
done
date >> /tmp/ab/paired.times
