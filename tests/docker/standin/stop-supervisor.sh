#!/bin/bash
# supervisord event listener: on any program's stop or exit, stop supervisord (its parent).
printf "READY\n"
while read -r line; do
  echo "Processing Event: $line" >&2
  kill "$PPID"
done < /dev/stdin
