# Traffic helper for the agent's namespace tests.
#   helper.py serve PORT...   TCP and UDP echo on each port (IPv4 and IPv6); prints "ready".
#   helper.py probe           reads commands on stdin, answers one line each:
#     tcp SRC DST PORT TIMEOUT     connect (from SRC, "-" for any), send, expect the echo: ok|fail
#     udp SRC DST PORT TIMEOUT     send a datagram, expect the echo: ok|fail
#     icmp SRC DST TIMEOUT         echo request, expect the reply: ok|fail
#     syn SRC DST PORT             start a TCP connect and drop it: sent
#     udpsend SRC DST PORT         one datagram: sent
#     icmpsend SRC DST             one echo request: sent
#     gresend SRC DST              one GRE packet (protocol 47, empty payload): sent
#     open ID SRC DST PORT TIMEOUT connect and keep the socket: ok|fail
#     send ID TIMEOUT              send on a kept socket, expect the echo: ok|fail
import os, socket, struct, sys, threading, time, random

def fam(dst):
    return socket.AF_INET6 if ":" in dst else socket.AF_INET

def tcp_conn(src, dst, port, timeout):
    s = socket.socket(fam(dst), socket.SOCK_STREAM)
    s.settimeout(timeout)
    if src != "-":
        s.bind((src, 0))
    s.connect((dst, port))
    return s

def echo_once(s, timeout):
    s.settimeout(timeout)
    s.sendall(b"palisade\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(100)
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data == b"palisade\n"

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return (~s) & 0xffff

def icmp(src, dst, timeout, wait):
    v6 = ":" in dst
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if src != "-":
        s.bind((src, 0))
    ident = random.randint(1, 65535)
    typ = 128 if v6 else 8
    hdr = struct.pack("!BBHHH", typ, 0, 0, ident, 1) + b"palisade"
    if not v6:
        hdr = struct.pack("!BBHHH", typ, 0, csum(hdr), ident, 1) + b"palisade"
    s.sendto(hdr, (dst, 0))
    if not wait:
        s.close()
        return True
    deadline = time.time() + timeout
    while time.time() < deadline:
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            data, addr = s.recvfrom(2000)
        except OSError:
            break
        if not v6:
            data = data[(data[0] & 15) * 4:]
        if len(data) >= 8:
            t, _, _, i, _ = struct.unpack("!BBHHH", data[:8])
            if t == (129 if v6 else 0) and i == ident:
                s.close()
                return True
    s.close()
    return False

def serve(ports):
    def tcp_client(c):
        try:
            while True:
                d = c.recv(4096)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()
    def tcp_loop(s):
        while True:
            c, _ = s.accept()
            threading.Thread(target=tcp_client, args=(c,), daemon=True).start()
    def udp_loop(s):
        while True:
            d, a = s.recvfrom(4096)
            s.sendto(d, a)
    for p in ports:
        for af, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            t = socket.socket(af, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if af == socket.AF_INET6:
                t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            t.bind((host, p))
            t.listen(64)
            threading.Thread(target=tcp_loop, args=(t,), daemon=True).start()
            u = socket.socket(af, socket.SOCK_DGRAM)
            if af == socket.AF_INET6:
                u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            u.bind((host, p))
            threading.Thread(target=udp_loop, args=(u,), daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)

def probe():
    kept = {}
    for line in sys.stdin:
        a = line.split()
        if not a:
            continue
        out = "fail"
        try:
            cmd = a[0]
            if cmd == "tcp":
                s = tcp_conn(a[1], a[2], int(a[3]), float(a[4]))
                out = "ok" if echo_once(s, float(a[4])) else "fail"
                s.close()
            elif cmd == "udp":
                s = socket.socket(fam(a[2]), socket.SOCK_DGRAM)
                if a[1] != "-":
                    s.bind((a[1], 0))
                s.settimeout(float(a[4]))
                s.sendto(b"palisade", (a[2], int(a[3])))
                d, _ = s.recvfrom(100)
                out = "ok" if d == b"palisade" else "fail"
                s.close()
            elif cmd == "icmp":
                out = "ok" if icmp(a[1], a[2], float(a[3]), True) else "fail"
            elif cmd == "syn":
                s = socket.socket(fam(a[2]), socket.SOCK_STREAM)
                if a[1] != "-":
                    s.bind((a[1], 0))
                s.setblocking(False)
                try:
                    s.connect((a[2], int(a[3])))
                except OSError:
                    pass
                time.sleep(0.005)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                out = "sent"
            elif cmd == "udpsend":
                s = socket.socket(fam(a[2]), socket.SOCK_DGRAM)
                if a[1] != "-":
                    s.bind((a[1], 0))
                s.sendto(b"palisade", (a[2], int(a[3])))
                s.close()
                out = "sent"
            elif cmd == "icmpsend":
                icmp(a[1], a[2], 0, False)
                out = "sent"
            elif cmd == "gresend":
                s = socket.socket(fam(a[2]), socket.SOCK_RAW, 47)
                if a[1] != "-":
                    s.bind((a[1], 0))
                s.sendto(struct.pack("!HH", 0, 0x0800), (a[2], 0))
                s.close()
                out = "sent"
            elif cmd == "open":
                kept[a[1]] = tcp_conn(a[2], a[3], int(a[4]), float(a[5]))
                out = "ok" if echo_once(kept[a[1]], float(a[5])) else "fail"
            elif cmd == "send":
                out = "ok" if echo_once(kept[a[1]], float(a[2])) else "fail"
        except (OSError, ValueError, KeyError, IndexError):
            out = "fail"
        print(out, flush=True)

if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve([int(p) for p in sys.argv[2:]])
    else:
        probe()
