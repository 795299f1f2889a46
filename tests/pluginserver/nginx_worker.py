"""One nginx worker's side of the plugin protocol, as a process of its own (its own pid).

    python nginx_worker.py SOCKET [--connections 3] [--events 200] [--reconnect-every 40]
    python nginx_worker.py SOCKET --credits '{"cost": 1, "redis_url": ...}' [--events N]

Like Kong's worker: one msgid counter for all its connections, one instance of the `echo`
test plugin started once, events whose HandleEvent and Steps go out on *different*
connections of its pool, two events in flight at a time, and now and then a pooled
connection closed and a new one opened. Each access Step carries a value unique to this
process and event, which the plugin echoes back in its next call: an event misrouted to
another's handler, or to another process, shows as a wrong echo or an error.
With --credits it runs admitted requests of the `credits` plugin instead (canned PDK answers
for consumer `payer`, as load/bench_pluginserver.py does).

Prints one JSON line (pid, instance id, events answered, errors, the WorkerPid of every
connection), then keeps its pid alive until stdin closes, so the test decides when this
"nginx worker" is gone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

import msgpack


class Connection:
    def __init__(self, path: str, ids: Iterator[int]) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.ids = ids
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def send(self, method: str, arg: Any) -> int:
        msgid = next(self.ids)
        self.sock.sendall(msgpack.packb([0, msgid, method, [arg]], use_bin_type=True))
        return msgid

    def receive(self, msgid: int) -> tuple[Any, Any]:
        while True:
            for kind, got, error, result in self.unpacker:
                assert (kind, got) == (1, msgid), (kind, got, msgid)
                return error, result
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("plugin server closed the connection")
            self.unpacker.feed(data)

    def call(self, method: str, arg: Any) -> tuple[Any, Any]:
        return self.receive(self.send(method, arg))


class Worker:
    def __init__(self, path: str, connections: int) -> None:
        self.path = path
        self.ids = itertools.count(1)
        self.pool = [Connection(path, self.ids) for _ in range(connections)]
        self.turn = itertools.count()
        self.errors: list[str] = []
        self.answered = 0

    def conn(self) -> Connection:
        """The next pooled connection: each RPC of an event takes whichever comes up."""
        return self.pool[next(self.turn) % len(self.pool)]

    def call(self, method: str, arg: Any) -> Any:
        error, result = self.conn().call(method, arg)
        self.answered += 1
        if error is not None:
            self.errors.append(error)
        return result

    def renew(self, index: int) -> None:
        """Kong's pool: an idle connection closes, a new one opens."""
        self.pool[index].sock.close()
        self.pool[index] = Connection(self.path, self.ids)

    def event_pair(self, instance_id: int, tag: str) -> int:
        """Two access events in flight at once, then their log phases; returns events done."""
        opened = [self.call("plugin.HandleEvent", {"InstanceId": instance_id,
                                                   "EventName": "access"}) for _ in range(2)]
        for n, answer in enumerate(opened):
            if answer is None:
                continue
            assert answer["Data"]["Method"] == "kong.request.get_header"
            value = f"{tag}-{n}"
            echoed = self.call("plugin.Step", {"EventId": answer["EventId"], "Data": value})
            if echoed is None:
                continue
            if echoed["Data"] != {"Method": "kong.response.set_header",
                                  "Args": ["X-Echo", value]}:
                self.errors.append(f"wrong echo for {value}: {echoed['Data']!r}")
            done = self.call("plugin.Step", {"EventId": answer["EventId"]})
            if done is not None and done["Data"] != "ret":
                self.errors.append(f"no ret for {value}: {done['Data']!r}")
        for _ in range(2):
            logged = self.call("plugin.HandleEvent", {"InstanceId": instance_id,
                                                      "EventName": "log"})
            if logged is not None:
                self.call("plugin.Step", {"EventId": logged["EventId"]})
        return 2

    def credits_request(self, instance_id: int) -> int:
        """The RPCs of an admitted credits request: its access phase (it has no log)."""
        answer = self.call("plugin.HandleEvent", {"InstanceId": instance_id,
                                                  "EventName": "access"})
        while answer is not None and answer["Data"] != "ret":
            data = CREDITS_ANSWERS[answer["Data"]["Method"]]
            step = {"EventId": answer["EventId"]} if data is None else {
                "EventId": answer["EventId"], "Data": data}
            answer = self.call("plugin.Step", step)
        return 1


CREDITS_ANSWERS: dict[str, Any] = {
    "kong.client.get_consumer": {"id": "c-1", "username": "payer", "custom_id": "payer"},
    "kong.nginx.get_var": "GET /paid HTTP/1.1",
    "kong.response.set_headers": None,
    "kong.response.set_header": None,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--reconnect-every", type=int, default=40)
    parser.add_argument("--credits", metavar="CONFIG_JSON")
    args = parser.parse_args()

    worker = Worker(args.socket, args.connections)
    name, config = ("credits", args.credits) if args.credits else ("echo", "{}")
    instance_id = worker.call("plugin.StartInstance", {"Name": name, "Config": config})["Id"]
    events = 0
    while events < args.events:
        if args.credits:
            events += worker.credits_request(instance_id)
        else:
            events += worker.event_pair(instance_id, f"{os.getpid()}-{events}")
        if events % args.reconnect_every == 0:
            worker.renew(events // args.reconnect_every % len(worker.pool))
    worker_pids = [conn.call("plugin.GetStatus", {})[1]["WorkerPid"] for conn in worker.pool]
    print(json.dumps({"pid": os.getpid(), "instance": instance_id, "events": events,
                      "answered": worker.answered, "errors": worker.errors,
                      "worker_pids": worker_pids}), flush=True)
    sys.stdin.read()  # stay alive (this pid keeps its assignment) until the test lets go


if __name__ == "__main__":
    main()
