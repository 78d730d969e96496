"""The stand-in boards' power switch for labgrid's ExternalPowerDriver: appends the verb to a
log, one line per call (``python standin_power.py on|off|cycle LOG``), as a PDU would switch."""

import sys
import time

verb, log = sys.argv[1], sys.argv[2]
with open(log, "a", encoding="utf-8") as fh:
    fh.write(f"{verb} {time.time():.3f}\n")
