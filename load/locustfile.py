"""Locust load on the routes of kong/kong.yml, through the host or a real Kong.

    # the host (no Kong needed): the demo points kong.yml's services at its sample upstream
    kong-credits demo --keep-running --listen 127.0.0.1:8000
    locust -f load/locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8000 \\
        --fund-redis-url redis://127.0.0.1:PORT/0      # the URL the demo prints

    # real Kong: docker compose up --build, then fund the wallets once
    docker compose exec kong kong-credits grant acme 1000000
    docker compose exec kong kong-credits grant team-blue 1000000
    locust -f load/locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8000

Each user is one of the four consumers of kong.yml (alice, bob, carol: funded wallets acme
and team-blue; dave: an empty wallet). 200, 402 and 429 are all correct answers of the credits
plugin, so they count as successes; the summary at the end counts them per route. Anything
else (401, 5xx, a 402/429 without its body) is a failure.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from locust import HttpUser, between, events, task

API_KEYS = ["alice-key", "bob-key", "carol-key", "dave-key"]
WALLETS = ["acme", "team-blue"]  # dave's wallet stays empty: his requests are 402s
EXPECTED = {200, 402, 429}
outcomes: Counter[tuple[str, int]] = Counter()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--fund-redis-url", default="", include_in_web_ui=False,
                        help="grant the funded wallets 10^9 credits in this Redis at start "
                             "(idempotent); leave empty when they are funded already")


@events.test_start.add_listener
def _fund(environment: Any, **_: Any) -> None:
    url = environment.parsed_options.fund_redis_url if environment.parsed_options else ""
    if not url:
        return
    import redis

    from kong_credits import wallets

    client = redis.Redis.from_url(url)
    for wallet in WALLETS:
        wallets.grant(client, wallet, 10**9, grant_id=f"locust-{wallet}")
    client.close()


@events.test_stop.add_listener
def _summary(**_: Any) -> None:
    if not outcomes:
        return
    print("\ncredits outcomes per route (status: count):")
    for route in sorted({route for route, _ in outcomes}):
        counts = ", ".join(f"{status}: {n}" for (r, status), n in sorted(outcomes.items())
                           if r == route)
        print(f"  {route:10} {counts}")


class ApiCustomer(HttpUser):
    """One consumer calling the priced routes: mostly search, some generate, a few status."""

    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.api_key = random.choice(API_KEYS)

    def _get(self, route: str, path: str) -> None:
        with self.client.get(path, headers={"apikey": self.api_key}, name=route,
                             catch_response=True) as response:
            outcomes[(route, response.status_code)] += 1
            if response.status_code not in EXPECTED:
                response.failure(f"unexpected status {response.status_code}")
            elif response.status_code == 402 and "balance" not in response.text:
                response.failure("402 without the balance")
            elif response.status_code == 429 and not response.headers.get("Retry-After"):
                response.failure("429 without Retry-After")
            else:
                response.success()

    @task(6)
    def search(self) -> None:
        self._get("/search", f"/search?q=item{random.randrange(1000)}")

    @task(2)
    def generate(self) -> None:
        # the sample upstream echoes query arguments as response headers: the units used
        self._get("/generate", f"/generate?X-Units-Used={random.randint(1, 40)}")

    @task(1)
    def status(self) -> None:
        self._get("/status", "/status")
