"""Create+Get+Destroy cycles per second through one PyKMIP ProxyKmipClient.

Usage: pykmip_cycles.py HOST PORT CERT KEY CA SECONDS
Used by scripts/bench.sh to compare Keyhold with PyKMIP's own server through
the same client.
"""
import sys
import time

from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

host, port, cert, key, ca, secs = sys.argv[1:7]
with ProxyKmipClient(hostname=host, port=int(port), cert=cert, key=key, ca=ca,
                     kmip_version=enums.KMIPVersion.KMIP_1_2) as c:
    n = 0
    end = time.monotonic() + float(secs)
    t0 = time.monotonic()
    while time.monotonic() < end:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256)
        c.get(uid)
        c.destroy(uid)
        n += 1
    print(f"{n / (time.monotonic() - t0):.1f} cycles/s")
