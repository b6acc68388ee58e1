import socket
import time

import uwsgi

CACHE = "results"
out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
out.setblocking(False)
st = [0, 0, 0, time.time()]  # wakes, extra wake-ups drained, jobs


def stat() -> None:
    if time.time() - st[3] > 2:
        print("MULESTAT", uwsgi.mule_id(), "wakes", st[0], "drained", st[1], "jobs", st[2], flush=True)
        st[3] = time.time()


while True:
    msg = uwsgi.mule_get_msg(timeout=1)
    stat()
    if not msg:
        continue
    st[0] += 1
    while True:
        while uwsgi.mule_get_msg(timeout=0):  # swallow wake-ups that are covered by the pull below
            st[1] += 1
        j = uwsgi.queue_pull()
        if j is None:
            break
        st[2] += 1
        stat()
        jid, addr, payload = j.decode().split("|", 2)
        d, payload = payload.split(";", 1)
        if d != "0":
            time.sleep(float(d) / 1000)
        res = str(sum(float(x) for x in payload.split(","))).encode()
        if not uwsgi.cache_update(jid, res, 60, CACHE):
            print("cache_update failed", flush=True)
        if addr != "-":
            try:
                out.sendto(b"x", "\0" + addr)
            except OSError as e:
                print("sendto", addr, e, flush=True)
