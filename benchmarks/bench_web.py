"""First worklist page with 10,000 rows in the node's database (issue 13: < 300 ms on 2 cores).

Rows are inserted directly (realistic values, a spread of dates, statuses and triggers); the
page is served by the real application through Starlette's test client, signed in as a viewer.
Prints the median and worst of repeated requests for: the first page, a filtered page, a sorted
page, a text search and a late page::

    .venv/bin/python benchmarks/bench_web.py [--rows 10000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert
from starlette.testclient import TestClient

from osteo_node.store.db import METADATA, make_engine
from osteo_node.web import users
from osteo_node.web.app import WebContext, create_app
from osteo_node.worklist.store import fls_worklist

STATUSES = ("new", "contacted", "referred", "not_indicated")


def _rows(n: int) -> list[dict[str, object]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        grade = (None, 0, 1, 2, 3)[i % 5]
        at = start + timedelta(minutes=47 * i)
        out.append(dict(
            study_instance_uid=f"1.2.826.0.1.3680043.9.{i}", series_instance_uid=f"1.2.9.{i}.1",
            patient_id=f"MRN{i:07d}", patient_name=f"Family{i}^Given{i % 97}",
            patient_birth_date=f"19{40 + i % 50:02d}0{1 + i % 9}1{i % 9}", patient_sex="MF"[i % 2],
            study_date=at.strftime("%Y%m%d"), accession_number=f"ACC{i}", modality="CT",
            trigger="positive", osteoporosis_suspected=i % 3 == 0, density_level="L1",
            density_hu=60.0 + i % 120, level_uncertain=i % 7 == 0, max_genant_grade=grade,
            vcf_levels="T12" if grade and grade >= 2 else "",
            findings_summary="vertebral deformity T12 grade 2 wedge", red_flags="" if i % 11
            else "lytic focus", vertebrae_json=json.dumps([]), created_at=at, updated_at=at,
            status=STATUSES[i % 4]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'node.db'}")
        METADATA.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(fls_worklist), _rows(args.rows))
        users.add_user(engine, "bench", "viewer", "bench-password-1")
        client = TestClient(create_app(WebContext(engine)), follow_redirects=False)
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
        client.post("/login", data={"name": "bench", "password": "bench-password-1",
                                    "csrf": token})
        print(f"{args.rows} worklist rows, SQLite, {args.repeat} requests each")
        for label, url in (("first page", "/"), ("status filter", "/?status=referred"),
                           ("sorted by HU", "/?sort=hu"), ("text search", "/?q=Family77"),
                           ("page 300", "/?page=300&per_page=25")):
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                r = client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.status_code
            print(f"  {label:14} median {statistics.median(times):6.1f} ms   "
                  f"worst {max(times):6.1f} ms")
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
