"""Run ClinRisk's own QFracture-2012 C code, and the profile set it is compared on.

The authors (ClinRisk Ltd.; Hippisley-Cox & Coupland) publish QFracture-2012 as LGPL-3 C source
(http://svn.clinrisk.co.uk/qfracture; mirrored at github.com/nhsland/clinrisk-modules, folder
``qFracture/``). Their README asks every re-implementer "to check that the source that they
receive produces the same results as the original code". They publish no worked examples, so
the check is made against their program itself: :func:`compile_tool` builds their four
equations (``c/Q74_qfracture4_2012_2_{0,1}.c``, ``c/Q74_qnof_2012_2_{0,1}.c``, ``c/utils.c``,
``include/clinrisk/*.h``) with gcc together with the small driver :data:`HARNESS` written here,
which calls their public functions (their input validation included) with the argument lists
declared in their headers.

The source is not part of this repository. :func:`find_source` looks at ``OSTEO_QFRACTURE_SRC``
(the folder holding ``c/`` and ``include/``), then at :data:`VENDORED`.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osteo_node.clinical import qfracture

VENDORED = Path(__file__).parent / "third_party" / "clinrisk_qfracture"
RECORDED = Path(__file__).parent / "data" / "qfracture_2012_authors_outputs.csv"

SOURCES = (
    "c/Q74_qfracture4_2012_2_0.c", "c/Q74_qfracture4_2012_2_1.c", "c/Q74_qnof_2012_2_0.c",
    "c/Q74_qnof_2012_2_1.c", "c/utils.c",
)
HEADERS = (
    "include/clinrisk/Q74_qfracture4_2012_2_0.h", "include/clinrisk/Q74_qfracture4_2012_2_1.h",
    "include/clinrisk/Q74_qnof_2012_2_0.h", "include/clinrisk/Q74_qnof_2012_2_1.h",
    "include/clinrisk/utils.h",
)

# Order of the 0/1 flags on each input line of the harness (and in the recorded file).
FLAG_ORDER = (
    "antidepressant", "any_cancer", "asthma_copd", "care_home", "corticosteroids", "cvd",
    "dementia", "endocrine", "epilepsy", "falls", "prior_fracture", "hrt_oestrogen", "liver",
    "malabsorption", "parkinsons", "ra_sle", "renal", "type1_diabetes", "type2_diabetes",
    "parental_osteoporosis",
)
# Inputs an equation of the other sex does not take (the authors' argument lists).
NOT_FOR = {"female": frozenset({"care_home"}), "male": frozenset({"endocrine", "hrt_oestrogen"})}
HORIZONS = range(1, 19)  # survivor index 1..18 years, the authors' "surv" range

# Reads one profile per line: sex(0 female, 1 male) age alcohol smoking ethnicity bmi years and
# the 20 flags of FLAG_ORDER; prints "major hip" (percent, all 17 significant digits of the
# double) or "error <messages>".
HARNESS = r"""
#include <stdio.h>
#include <clinrisk/Q74_qfracture4_2012_2_0.h>
#include <clinrisk/Q74_qfracture4_2012_2_1.h>
#include <clinrisk/Q74_qnof_2012_2_0.h>
#include <clinrisk/Q74_qnof_2012_2_1.h>

int main(void) {
    int sex, age, alc, smk, eth, surv, f[20], e1, e2;
    double bmi, major, hip;
    char b1[1024], b2[1024];
    while (scanf("%d %d %d %d %d %lf %d", &sex, &age, &alc, &smk, &eth, &bmi, &surv) == 7) {
        for (int i = 0; i < 20; i++) if (scanf("%d", &f[i]) != 1) return 2;
        if (sex == 0) {
            major = fracture4_female(age, alc, f[0], f[1], f[2], f[4], f[5], f[6], f[7], f[8],
                f[9], f[10], f[11], f[12], f[13], f[14], f[15], f[16], f[17], f[18], bmi, eth,
                f[19], smk, surv, &e1, b1, sizeof b1);
            hip = nof_female(age, alc, f[0], f[1], f[2], f[4], f[5], f[6], f[7], f[8], f[9],
                f[10], f[11], f[12], f[14], f[15], f[16], f[17], f[18], bmi, eth, smk, surv,
                &e2, b2, sizeof b2);
        } else {
            major = fracture4_male(age, alc, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[8],
                f[9], f[10], f[12], f[13], f[14], f[15], f[16], f[17], f[18], bmi, eth, f[19],
                smk, surv, &e1, b1, sizeof b1);
            hip = nof_male(age, alc, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[8], f[9],
                f[10], f[12], f[14], f[15], f[16], f[17], f[18], bmi, eth, f[19], smk, surv,
                &e2, b2, sizeof b2);
        }
        if (e1 || e2) {  /* one line per profile: the messages end in newlines */
            for (char *c = b1; *c; c++) if (*c == '\n') *c = ' ';
            for (char *c = b2; *c; c++) if (*c == '\n') *c = ' ';
            printf("error %s%s\n", e1 ? b1 : "", e2 ? b2 : "");
        }
        else printf("%.17g %.17g\n", major, hip);
    }
    return 0;
}
"""


@dataclass(frozen=True)
class Case:
    """One profile at one horizon; ``label`` names the part of the domain it covers."""

    label: str
    inputs: qfracture.QFractureInputs
    years: int


def find_source() -> Path | None:
    """Folder holding the authors' ``c/`` and ``include/``, or None when there is none."""
    env = os.environ.get("OSTEO_QFRACTURE_SRC")
    if env:
        return Path(env)
    return VENDORED if (VENDORED / SOURCES[0]).is_file() else None


def missing_files(root: Path) -> list[str]:
    return [s for s in (*SOURCES, *HEADERS) if not (root / s).is_file()]


def source_digests(root: Path) -> dict[str, str]:
    """sha256 of every source and header file compiled."""
    return {s: hashlib.sha256((root / s).read_bytes()).hexdigest() for s in (*SOURCES, *HEADERS)}


def compile_tool(root: Path, workdir: Path) -> Path:
    """Compile :data:`HARNESS` with the authors' files; return the executable."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise FileNotFoundError("gcc not found")
    (workdir / "harness.c").write_text(HARNESS, encoding="utf-8")
    exe = workdir / "qfracture_authors"
    cmd = [gcc, "-std=gnu99", "-O0", "-I", str(root / "include"), str(workdir / "harness.c"),
           *(str(root / s) for s in SOURCES), "-o", str(exe), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def input_line(inp: qfracture.QFractureInputs, years: int) -> str:
    head = (f"{0 if inp.sex == 'female' else 1} {int(inp.age)} {inp.alcohol} {inp.smoking} "
            f"{inp.ethnicity} {inp.bmi!r} {years}")
    return head + " " + " ".join("1" if f in inp.flags else "0" for f in FLAG_ORDER)


def run_tool(exe: Path, cases: Sequence[Case]) -> list[str]:
    """The authors' output line for each case, in order."""
    run = subprocess.run([str(exe)], input="\n".join(input_line(c.inputs, c.years) for c in cases),
                         capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    if len(lines) != len(cases):
        raise RuntimeError(f"{len(lines)} output lines for {len(cases)} profiles")
    return lines


def _inputs(sex: qfracture.Sex, *, age: int = 65, bmi: float = 25.0, smoking: int = 0,
            alcohol: int = 0, ethnicity: int = 1,
            flags: Iterable[str] = ()) -> qfracture.QFractureInputs:
    return qfracture.QFractureInputs(age=age, sex=sex, bmi=bmi, smoking=smoking, alcohol=alcohol,
                                     ethnicity=ethnicity, flags=frozenset(flags))


def _one_at_a_time(sex: qfracture.Sex) -> list[Case]:
    """Every input value changed alone from a 65-year-old with BMI 25, at every horizon."""
    variants: list[tuple[str, qfracture.QFractureInputs]] = [("baseline", _inputs(sex))]
    variants += [(f"flag:{f}", _inputs(sex, flags=[f]))
                 for f in FLAG_ORDER if f not in NOT_FOR[sex]]
    variants += [(f"smoking:{s}", _inputs(sex, smoking=s)) for s in range(1, 5)]
    variants += [(f"alcohol:{a}", _inputs(sex, alcohol=a)) for a in range(1, 6)]
    variants += [(f"ethnicity:{e}", _inputs(sex, ethnicity=e)) for e in range(2, 10)]
    return [Case(label, inp, y) for label, inp in variants for y in HORIZONS]


def _grids(sex: qfracture.Sex) -> list[Case]:
    """Every whole age 30..100 and BMI 20..40 in steps of 0.5, at 5 and 10 years."""
    cases = [Case("age", _inputs(sex, age=a), y) for a in range(30, 101) for y in (5, 10)]
    cases += [Case("bmi", _inputs(sex, bmi=20.0 + 0.5 * i), y) for i in range(41) for y in (5, 10)]
    return cases


def _random(sex: qfracture.Sex, n: int, rng: random.Random) -> list[Case]:
    """Random combinations over the whole validated domain (flags each present with p 0.3)."""
    allowed = [f for f in FLAG_ORDER if f not in NOT_FOR[sex]]
    return [
        Case("random", _inputs(
            sex, age=rng.randint(30, 100), bmi=round(rng.uniform(20.0, 40.0), 4),
            smoking=rng.randint(0, 4), alcohol=rng.randint(0, 5), ethnicity=rng.randint(1, 9),
            flags=[f for f in allowed if rng.random() < 0.3]), rng.randint(1, 18))
        for _ in range(n)
    ]


def _named() -> list[Case]:
    """Five profiles with BMI from height and weight (cm, kg), at 10 years: those for which a
    third party (the endeavourpredict port) reported the authors' tools' output to 6 decimals."""
    def case(label: str, sex: qfracture.Sex, age: int, height: float, weight: float,
             **other: Any) -> Case:
        return Case(label, _inputs(sex, age=age, bmi=weight / (height / 100) ** 2, **other), 10)

    return [
        case("named:f65", "female", 65, 165, 68),
        case("named:f75", "female", 75, 160, 56, smoking=4, alcohol=4,
             flags=("prior_fracture", "ra_sle", "corticosteroids", "parental_osteoporosis")),
        case("named:m70", "male", 70, 175, 92, smoking=3,
             flags=("type2_diabetes", "cvd", "asthma_copd")),
        case("named:m80", "male", 80, 172, 71,
             flags=("falls", "parkinsons", "type1_diabetes", "care_home")),
        case("named:f60", "female", 60, 158, 60, ethnicity=2,
             flags=("hrt_oestrogen", "antidepressant")),
    ]


def profile_set(seed: int = 20121, random_per_sex: int = 800) -> list[Case]:
    """The profiles compared with the authors' code: both sexes, every horizon, every flag and
    category alone, age and BMI grids over the validated range, random combinations."""
    rng = random.Random(seed)
    sexes: tuple[qfracture.Sex, ...] = ("female", "male")
    cases: list[Case] = []
    for sex in sexes:
        cases += _one_at_a_time(sex) + _grids(sex) + _random(sex, random_per_sex, rng)
    return cases + _named()
