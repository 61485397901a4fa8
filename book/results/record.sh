#!/usr/bin/env bash
# The full-size runs of the second paper's chapters (issues 13 and 14), recorded under book/results/:
#   bash book/results/record.sh dkn   # degenerate + fact_checking: gemma-3-270m en and zh, smollm2-135m en
#   bash book/results/record.sh ml    # amig + language_independent: gemma-3-270m en,zh,fr,ru; smollm2-135m en,fr
#   bash book/results/record.sh amig-en   # amig alone: smollm2-135m en, 6 relations x 10 facts (it knows few facts in both en and fr)
# Each chapter runs with papermill (cwd book/) and its full-size parameters; its kn runs live in
# runs/dkn and runs/ml (kill-safe: run it again and it resumes), its log in runs/logs/. A finished
# (model, language) writes runs/logs/NAME.done and is skipped after. The quadrature: gemma-3-270m at
# gauss_legendre 6, what kn.calibrate picked for the AMIG baseline on 3 built-in facts outside these
# relations, en + zh (book/results/calibration/gemma-3-270m-amig, recorded by `kn calibrate`, see README.md);
# smollm2-135m at the paper's setting, which calibration keeps on that model (chapter "How many steps
# do you need?").
set -u
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH" PYTHONUNBUFFERED=1
mkdir -p runs/logs
RELATIONS='["capital", "official_language", "continent", "currency", "city_country", "company_country"]'
GEMMA=(-p rule gauss_legendre -p steps 6)
SMOLLM=(-p rule riemann_left -p steps 20)

chapter() {  # chapter NAME TAG PARAMS...: execute book/NAME.md; 0 on success
    local name=$1 tag=$2; shift 2
    jupytext --quiet --to ipynb --output "runs/logs/$tag.src.ipynb" "book/$name.md" || return 1
    local start=$SECONDS
    papermill --cwd book --kernel python3 --no-progress-bar --log-level WARNING --execution-timeout 86400 \
        "runs/logs/$tag.src.ipynb" "runs/logs/$tag.ipynb" "$@" > "runs/logs/$tag.log" 2>&1
    local rc=$?
    echo "$(date -u +%FT%TZ) $tag rc=$rc $((SECONDS - start)) s" | tee -a runs/logs/record.log
    return $rc
}

dkn() {  # dkn MODEL LANGUAGE QUADRATURE...
    local m=$1 l=$2; shift 2
    [ -e "runs/logs/dkn-$m-$l.done" ] && return 0
    local p=(-p model "$m" -p language "$l" -y "relations: $RELATIONS" -p facts_per_relation 20 "$@"
             -p out "$PWD/runs/dkn")
    chapter degenerate "dkn-$m-$l" "${p[@]}" -p sets_per_relation 2 -p record "results/dkn/$m-$l" \
        && chapter fact_checking "fc-$m-$l" "${p[@]}" -p record "results/factcheck/$m-$l" \
        && touch "runs/logs/dkn-$m-$l.done"
}

ml() {  # ml MODEL LANGUAGES QUADRATURE...
    local m=$1 langs=$2; shift 2
    [ -e "runs/logs/ml-$m.done" ] && return 0
    local p=(-p model "$m" -y "languages: $langs" -y "relations: $RELATIONS" -p facts_per_relation 20 "$@"
             -p out "$PWD/runs/ml")
    chapter amig "amig-$m" "${p[@]}" -p record "results/amig/$m" \
        && chapter language_independent "likn-$m" "${p[@]}" -p record "results/likn/$m" \
        && touch "runs/logs/ml-$m.done"
}

amig_one() {  # amig_one MODEL LANGUAGE FACTS_PER_RELATION QUADRATURE...: the AMIG comparison in one language
    local m=$1 l=$2 n=$3; shift 3
    [ -e "runs/logs/amig-$m-$l.done" ] && return 0
    chapter amig "amig-$m-$l" -p model "$m" -y "languages: [$l]" -y "relations: $RELATIONS" -p facts_per_relation "$n" \
        "$@" -p out "$PWD/runs/ml" -p record "results/amig/$m-$l" && touch "runs/logs/amig-$m-$l.done"
}

case "${1:-}" in
    dkn) dkn gemma-3-270m en "${GEMMA[@]}"; dkn gemma-3-270m zh "${GEMMA[@]}"; dkn smollm2-135m en "${SMOLLM[@]}" ;;
    ml) ml gemma-3-270m "[en, zh, fr, ru]" "${GEMMA[@]}"; ml smollm2-135m "[en, fr]" "${SMOLLM[@]}" ;;
    amig-en) amig_one smollm2-135m en 10 "${SMOLLM[@]}" ;;  # smollm2-135m knows few facts in both en and fr
    *) echo "usage: bash book/results/record.sh dkn|ml|amig-en" >&2; exit 2 ;;
esac
