"""The text domain's tasks: four small classification tasks written from templates (no data set
is downloaded), each with its classes described in words for the frozen zero-shot head.

The tasks share one vocabulary (people, objects, places), so the same sentence can be read four
ways: what it thinks of something (sentiment, with negations that a sentence encoder handles
badly), what it is about (topic), when it happens (tense) and what kind of sentence it is
(question, command or statement). Train and test sentences use disjoint halves of the vocabulary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TASKS = ("sentiment", "topic", "tense", "mood")

PEOPLE = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Leo",
          "Maya", "Nils", "Olga", "Pablo", "Rosa", "Sami", "Tara", "Viktor"]
TOPICS = {  # topic -> things a sentence about it can mention
    "sports": ["the match", "the referee", "the penalty kick", "the marathon", "the tennis final", "the goalkeeper",
               "the relay race", "the league table", "the boxing round", "the ski jump"],
    "food": ["the soup", "the recipe", "the bread dough", "the spicy curry", "the chocolate cake", "the salad",
             "the roast chicken", "the pasta sauce", "the breakfast menu", "the cheese plate"],
    "technology": ["the laptop", "the software update", "the phone battery", "the new processor", "the wifi router",
                   "the mobile app", "the graphics card", "the smart watch", "the database server", "the printer driver"],
    "weather": ["the forecast", "the thunderstorm", "the morning fog", "the heat wave", "the snowfall", "the humidity",
                "the strong wind", "the drizzle", "the cold front", "the sunny spell"],
}
POSITIVE = ["wonderful", "excellent", "delightful", "great", "fantastic", "superb", "lovely", "brilliant"]
NEGATIVE = ["terrible", "awful", "dreadful", "horrible", "disappointing", "miserable", "poor", "dull"]
VERBS = [  # (base, past, present participle)
    ("talk about", "talked about", "talking about"), ("write about", "wrote about", "writing about"),
    ("complain about", "complained about", "complaining about"), ("read about", "read about", "reading about"),
    ("think about", "thought about", "thinking about"), ("look at", "looked at", "looking at"),
    ("ask about", "asked about", "asking about"), ("argue about", "argued about", "arguing about"),
]

# each class described in words; the base model embeds these once (the frozen heads)
CLASSES: dict[str, tuple[str, ...]] = {
    "sentiment": ("A positive opinion: someone liked it and is pleased.",
                  "A negative opinion: someone disliked it and is unhappy."),
    # topic's head names the occasion, not the topic: the base model reads "This text is about sports"
    # right 0.94 of the time, leaving its LoRA nothing to teach; from these it reads 0.63
    "topic": ("Something for a Saturday afternoon.", "Something for dinner time.",
              "Something for the working day.", "Something for a day outdoors."),
    "tense": ("Something that already happened in the past.", "Something that is happening right now.",
              "Something that will happen in the future."),
    "mood": ("A question asking for information.", "A command telling someone what to do.",
             "A statement describing a fact."),
}


@dataclass(frozen=True)
class Example:
    text: str
    label: int


def _half(items: list, split: str) -> list:
    return items[0::2] if split == "train" else items[1::2]


def _sentence(rng: random.Random, split: str) -> dict:
    """A random sentence frame: who, which topic and thing, which verb, sentiment, tense, mood."""
    topic = rng.randrange(len(TOPICS))
    return {"who": rng.choice(_half(PEOPLE, split)),
            "topic": topic, "thing": rng.choice(_half(list(TOPICS.values())[topic], split)),
            "verb": rng.choice(_half(VERBS, split)), "tense": rng.randrange(3), "mood": rng.randrange(3),
            "positive": rng.random() < 0.5, "negated": rng.random() < 0.5,
            "adj": rng.choice(_half(POSITIVE, split)), "bad": rng.choice(_half(NEGATIVE, split))}


def render(f: dict, *, opinion: bool) -> str:
    """The sentence of frame `f`: its tense and mood always; an opinion clause when `opinion`."""
    base, past, ing = f["verb"]
    who, thing = f["who"], f["thing"]
    if f["mood"] == 1:  # command (no tense of its own: the tense task never sees commands)
        core = f"{who}, {base} {thing}"
    else:
        core = [f"{who} {past} {thing}", f"{who} is {ing} {thing}", f"{who} will {base} {thing}"][f["tense"]]
        if f["mood"] == 0:
            aux = ["did", "is", "will"][f["tense"]]
            verb = [base, ing, base][f["tense"]]
            core = f"{aux.capitalize()} {who} {verb} {thing}"
    if opinion:
        word = f["adj"] if f["positive"] != f["negated"] else f["bad"]
        clause = f"it was {'not ' if f['negated'] else ''}{word}"
        core = f"{core} because {clause}" if f["mood"] != 1 else f"{core}, {clause}"
    return core + ("?" if f["mood"] == 0 else ".")


def examples(task: str, split: str, n: int, seed: int) -> list[Example]:
    """`n` labelled sentences of `task` (deterministic in `seed`; vocabulary half by `split`)."""
    rng = random.Random(f"{task}/{split}/{seed}")
    out = []
    while len(out) < n:
        f = _sentence(rng, split)
        if task == "tense" and f["mood"] == 1:
            continue
        label = {"sentiment": 0 if f["positive"] else 1, "topic": f["topic"], "tense": f["tense"],
                 "mood": f["mood"]}[task]
        out.append(Example(render(f, opinion=task == "sentiment" or rng.random() < 0.3), label))
    return out
