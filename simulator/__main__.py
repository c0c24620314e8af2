"""Run the simulator in its own process: ``python -m simulator --users 10000 --latency 0.2``.

The first line on stdout is the JSON object of environment variables pointing a client at
it (see ``Simulator.env``); it then serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import orjson

from . import Simulator, TenantSpec
from .tenant import DEFAULT_ROLES, UPN_LOCAL_CHARS


def build_parser() -> argparse.ArgumentParser:
    """Command-line options mirroring TenantSpec."""
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument(
        "--roles", default=",".join(sorted(DEFAULT_ROLES)), help="granted application permissions, comma-separated"
    )
    p.add_argument("--no-premium", action="store_true", help="tenant without Entra ID P1/P2")
    p.add_argument("--domains", default=None, help="verified domains, comma-separated; the first is the initial one")
    p.add_argument("--latency", type=float, default=0.0, help="seconds each Graph request takes, answer included")
    p.add_argument("--throttle-rate", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=1)
    p.add_argument("--transient-rate", type=float, default=0.0)
    p.add_argument("--rate-limit", type=int, default=None, help="resource units per 10 s (token-bucket throttling)")
    p.add_argument("--secret-expired", action="store_true")
    p.add_argument("--foreign-next-link", action="store_true")
    p.add_argument("--token-lifetime", type=int, default=3599)
    p.add_argument("--secret-expires-in-days", type=int, default=None)
    p.add_argument("--secret-in", choices=("env", "keyvault"), default="env")
    p.add_argument("--groups", type=int, default=None, help="groups (default: users / 25)")
    p.add_argument("--devices", type=int, default=None, help="Entra devices (default: 60%% of users)")
    p.add_argument("--applications", type=int, default=None, help="app registrations (default: users / 50)")
    p.add_argument("--report-names", choices=("concealed", "visible"), default="concealed",
                   help="user names in usage reports: concealed (Microsoft's default since 2021) or visible")
    p.add_argument("--licence-changes", type=int, default=0, metavar="N",
                   help="the same tenant N rounds of licence changes later (about 3%% of members each)")
    p.add_argument("--identity-reports-limit", type=int, default=None,
                   help="requests per 10 s for identity and access reports (Graph documents 5)")
    p.add_argument("--sign-in-is-identity-report", action="store_true",
                   help="listing users with signInActivity counts against that limit (an open question)")
    p.add_argument("--sign-in-eventual-quirk", action="store_true",
                   help="signInActivity empty for some users under ConsistencyLevel: eventual (reported)")
    p.add_argument("--startswith-case-sensitive", action="store_true")
    p.add_argument("--quota-scale", type=float, default=1.0,
                   help="divide every Graph quota window by this (benchmarks; the env it prints tells the connector)")
    p.add_argument("--no-quotas", action="store_true", help="do not enforce Graph's documented quotas")
    p.add_argument("--sign-in-page-limit", type=int, default=500,
                   help="users per page with signInActivity (500; the older service: 120)")
    p.add_argument("--registration-top", choices=("ignore", "honour", "refuse"), default="ignore",
                   help="userRegistrationDetails and $top, which its API page does not document (default: ignore)")
    p.add_argument("--render-cache", action="store_true",
                   help="benchmarks: keep users' JSON once built, so a second collection costs the stand-in little CPU")
    p.add_argument("--warm-select", metavar="SELECT",
                   help="benchmarks, with --render-cache: build every user's JSON for this $select before serving")
    p.add_argument("--all-upn-initials", action="store_true",
                   help="UPNs start with every character Entra allows, in both cases")
    return p


def main(argv: list[str] | None = None) -> int:
    """Start, print the environment as JSON, serve until a signal."""
    args = build_parser().parse_args(argv)
    spec = TenantSpec(
        seed=args.seed,
        users=args.users,
        roles=frozenset(r.strip() for r in args.roles.split(",") if r.strip()),
        premium=not args.no_premium,
        latency=args.latency,
        throttle_rate=args.throttle_rate,
        retry_after=args.retry_after,
        transient_rate=args.transient_rate,
        rate_limit_ru_per_10s=args.rate_limit,
        secret_expired=args.secret_expired,
        foreign_next_link=args.foreign_next_link,
        token_lifetime=args.token_lifetime,
        secret_expires_in_days=args.secret_expires_in_days,
        groups=args.groups,
        devices=args.devices,
        applications=args.applications,
        report_names_concealed=args.report_names == "concealed",
        licence_changes=args.licence_changes,
        identity_reports_limit=args.identity_reports_limit,
        sign_in_is_identity_report=args.sign_in_is_identity_report,
        sign_in_eventual_quirk=args.sign_in_eventual_quirk,
        startswith_case_sensitive=args.startswith_case_sensitive,
        upn_initials=UPN_LOCAL_CHARS if args.all_upn_initials else "",
        render_cache=args.render_cache,
        quotas=not args.no_quotas,
        quota_scale=args.quota_scale,
        sign_in_page_limit=args.sign_in_page_limit,
        registration_top=args.registration_top,
    )
    if args.domains:
        spec.domains = tuple(d.strip() for d in args.domains.split(",") if d.strip())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Simulator(spec) as sim:
        sim.tenant.upn(0)  # build the user index first: a client's first request finds it ready
        if args.warm_select:
            sim.warm_render_cache(args.warm_select)
        sys.stdout.write(orjson.dumps(sim.env(secret_in=args.secret_in)).decode() + "\n")
        sys.stdout.flush()
        print(
            f"simulator: tenant {sim.tenant_id}, {spec.users} users; graph {sim.graph_endpoint}, "
            f"login {sim.authority_host}, decoy {sim.decoy_endpoint}. Ctrl-C to stop.",
            file=sys.stderr,
        )
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
