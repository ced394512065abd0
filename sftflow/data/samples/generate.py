"""Generate the embedded sample data: synthetic WikiHow-style how-to articles and summaries.

Why synthetic: the offline default must tune and evaluate without network access, and the
effect of tuning must be real and measurable. Each article has chatty, topic-heavy filler
(what centroid similarity prefers), two or three steps (an instruction sentence followed by
elaborations) and tips. The reference summary is the instruction sentence of each step,
lightly compressed/paraphrased — so a zero-shot centroid scorer mostly misses it, while a
scorer tuned on the training summaries learns to find it.

Deterministic (seeded `random.Random`), stdlib only. Run from the repository root:

    python -m sftflow.data.samples.generate
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SEED = 20240611
SIZES = {"train": 400, "val": 50, "test": 60}
INSTRUCTION = "Provide a summary with about two sentences for the following article:"
SYSTEM = "You are a helpful assistant that writes short, faithful summaries."

# topic phrase, topic noun, objects, tools, end states
TOPICS = [
    ("clean a bicycle chain", "bike", ["chain", "derailleur", "sprockets", "links"],
     ["degreaser", "stiff brush", "rag", "chain lube"], ["shiny", "dry", "smooth"]),
    ("bake banana bread", "bread", ["batter", "bananas", "loaf pan", "flour"],
     ["wooden spoon", "fork", "mixing bowl", "spatula"], ["golden", "moist", "fluffy"]),
    ("repot a houseplant", "plant", ["roots", "pot", "soil", "drainage hole"],
     ["trowel", "watering can", "pruning shears", "fresh compost"], ["loose", "settled", "damp"]),
    ("paint a bedroom wall", "wall", ["trim", "ceiling edge", "primer coat", "baseboards"],
     ["roller", "angled brush", "painter's tape", "drop cloth"], ["even", "dry", "smooth"]),
    ("change a flat tire", "car", ["lug nuts", "spare tire", "wheel", "jack point"],
     ["lug wrench", "car jack", "wheel chock", "flashlight"], ["tight", "secure", "level"]),
    ("start a vegetable garden", "garden", ["seedlings", "raised bed", "rows", "mulch"],
     ["hoe", "garden rake", "hose", "seed packets"], ["weeded", "watered", "even"]),
    ("train a puppy to sit", "puppy", ["treat", "leash", "command", "reward"],
     ["clicker", "treat pouch", "short leash", "chew toy"], ["calm", "focused", "relaxed"]),
    ("brew pour-over coffee", "coffee", ["grounds", "filter", "kettle water", "carafe"],
     ["gooseneck kettle", "burr grinder", "kitchen scale", "paper filter"], ["hot", "even", "bloomed"]),
    ("write a cover letter", "letter", ["opening paragraph", "job posting", "signature", "salutation"],
     ["template", "spell checker", "notepad", "highlighter"], ["concise", "polished", "specific"]),
    ("knit a simple scarf", "scarf", ["yarn", "first row", "stitches", "tail"],
     ["knitting needles", "tapestry needle", "scissors", "row counter"], ["snug", "even", "neat"]),
    ("fix a leaky faucet", "faucet", ["washer", "valve stem", "handle", "water supply"],
     ["adjustable wrench", "screwdriver", "plumber's tape", "towel"], ["tight", "dry", "sealed"]),
    ("set up a fish tank", "aquarium", ["gravel", "filter", "heater", "water conditioner"],
     ["siphon", "thermometer", "test kit", "bucket"], ["clear", "warm", "cycled"]),
    ("make a paper airplane", "airplane", ["paper", "wings", "nose", "center crease"],
     ["ruler", "bone folder", "tape", "pencil"], ["crisp", "symmetrical", "flat"]),
    ("wash a wool sweater", "sweater", ["sweater", "cuffs", "collar", "lukewarm water"],
     ["wool wash", "basin", "towel", "drying rack"], ["flat", "soft", "damp"]),
    ("organize a closet", "closet", ["hangers", "shelves", "shoes", "donation pile"],
     ["storage bins", "labels", "shelf dividers", "garbage bags"], ["tidy", "sorted", "clear"]),
    ("sharpen a kitchen knife", "knife", ["blade", "edge", "tip", "heel"],
     ["whetstone", "honing rod", "cloth", "water"], ["sharp", "clean", "burr-free"]),
    ("plan a camping trip", "camping", ["campsite", "tent", "food supplies", "route"],
     ["map", "checklist", "cooler", "headlamp"], ["booked", "packed", "ready"]),
    ("clean a cast iron pan", "pan", ["pan surface", "food residue", "seasoning", "handle"],
     ["coarse salt", "scrub brush", "paper towel", "vegetable oil"], ["dry", "seasoned", "smooth"]),
    ("learn to juggle", "juggling", ["first ball", "throw", "catch", "pattern"],
     ["juggling balls", "beanbags", "mirror", "timer"], ["steady", "rhythmic", "relaxed"]),
    ("build a birdhouse", "birdhouse", ["side panels", "roof", "entrance hole", "floor"],
     ["hand saw", "drill", "wood glue", "sandpaper"], ["sturdy", "square", "smooth"]),
    ("make homemade pizza dough", "pizza", ["dough", "yeast", "olive oil", "flour"],
     ["stand mixer", "bench scraper", "bowl", "plastic wrap"], ["elastic", "risen", "smooth"]),
    ("clean a laptop keyboard", "laptop", ["keys", "crumbs", "keycaps", "trackpad"],
     ["compressed air", "cotton swab", "microfiber cloth", "isopropyl alcohol"], ["clean", "dry", "dust-free"]),
    ("prepare for a job interview", "interview", ["answers", "questions", "outfit", "company history"],
     ["notebook", "practice partner", "printed resume", "calendar"], ["confident", "prepared", "calm"]),
    ("hang a picture frame", "picture", ["frame", "nail", "stud", "wire"],
     ["level", "hammer", "stud finder", "measuring tape"], ["straight", "secure", "centered"]),
    ("grow herbs on a windowsill", "herbs", ["basil", "seeds", "containers", "leaves"],
     ["spray bottle", "potting mix", "small pots", "grow light"], ["sunny", "moist", "healthy"]),
    ("unclog a drain", "drain", ["drain opening", "hair clog", "pipe", "trap"],
     ["plunger", "drain snake", "baking soda", "vinegar"], ["clear", "flowing", "clean"]),
    ("wax a snowboard", "snowboard", ["base", "edges", "wax layer", "nose"],
     ["waxing iron", "plastic scraper", "nylon brush", "base cleaner"], ["smooth", "even", "glossy"]),
    ("make a budget spreadsheet", "budget", ["income column", "expenses", "totals", "categories"],
     ["spreadsheet app", "bank statements", "formulas", "calculator"], ["balanced", "accurate", "clear"]),
    ("care for leather boots", "boots", ["leather", "laces", "soles", "seams"],
     ["leather conditioner", "horsehair brush", "soft cloth", "waterproofing spray"], ["supple", "clean", "protected"]),
    ("replace a light switch", "switch", ["wires", "switch plate", "breaker", "terminal screws"],
     ["voltage tester", "screwdriver", "wire stripper", "electrical tape"], ["safe", "secure", "flush"]),
]

VERBS = ["Wipe", "Check", "Place", "Press", "Rinse", "Measure", "Spread", "Remove", "Attach",
         "Loosen", "Tighten", "Fold", "Mix", "Cover", "Inspect", "Gently move", "Hold", "Set"]
ADVERBS = ["Carefully", "Slowly", "Firmly", "Patiently", "Thoroughly", "Gently"]
OPENERS = ["First,", "Next,", "Then", "After that,", "Finally,"]

FILLER = [
    "Learning how to {t} is something a lot of people wonder about at some point.",
    "If you have ever wanted to {t}, you are definitely not alone, and it is easier than it looks.",
    "Knowing how to {t} can save you time, money and a lot of frustration with your {n}.",
    "Many people think that learning to {t} is hard, but anyone can {t} with a little practice.",
    "Your {n} will thank you once you know how to {t} the right way.",
    "Honestly, the best part about learning to {t} is how good your {n} looks afterwards.",
    "There are many ways to {t}, and everyone seems to have a favourite way to {t}.",
]
ELABORATIONS = [
    "This part can feel a little tedious, but it really pays off with your {n}.",
    "Don't worry if it takes a couple of tries the first time you {t}.",
    "Take your time here, because rushing is the most common mistake people make.",
    "Some people like to put on music while they do this part, which is totally fine.",
    "You'll notice the difference right away when you {t} like this.",
    "It is a small detail, but it makes the whole {n} project go more smoothly.",
    "If something seems off, just pause and look at your {n} again before moving on.",
    "Experienced people who {t} often say this is the step they never skip.",
]
TIPS = [
    "Tip: keep a clean towel nearby, since things can get a bit messy when you {t}.",
    "Tip: ask a friend to help you the first time you {t}.",
    "Warning: never rush it, because a rushed job can damage your {n}.",
    "Tip: write down what worked for you so it is easier to {t} next time.",
]
CLOSERS = [
    "With a bit of patience, you will be able to {t} like a pro in no time!",
    "That's really all there is to it, so go ahead and enjoy your {n}.",
    "Once you get the hang of it, you'll wonder why you ever worried about how to {t}.",
]


def _step(rng: random.Random, objs: list[str], tools: list[str], states: list[str], opener: str):
    """One step: (article sentence, summary sentence)."""
    verb = rng.choice(VERBS)
    obj, tool, state = rng.choice(objs), rng.choice(tools), rng.choice(states)
    adv = rng.choice(ADVERBS)
    long = f"{opener} {adv.lower()} {verb.lower()} the {obj} with the {tool} until it is {state}."
    long = long[0].upper() + long[1:]
    form = rng.random()
    if form < 0.5:
        short = f"{verb} the {obj} with the {tool}."
    elif form < 0.8:
        short = f"{verb} the {obj} using a {tool} until {state}."
    else:
        short = f"Use the {tool} to {verb.lower()} the {obj}."
    return long, short


def article(rng: random.Random) -> tuple[str, str]:
    t, n, objs, tools, states = rng.choice(TOPICS)
    fmt = {"t": t, "n": n}
    sents: list[str] = [s.format(**fmt) for s in rng.sample(FILLER, rng.randint(2, 3))]
    n_steps = 2 if rng.random() < 0.7 else 3
    openers = OPENERS[:n_steps - 1] + ["Finally,"]
    summary = []
    elaborations = rng.sample(ELABORATIONS, len(ELABORATIONS))
    for i in range(n_steps):
        long, short = _step(rng, objs, tools, states, openers[i])
        sents.append(long)
        summary.append(short)
        sents.extend(elaborations.pop().format(**fmt) for _ in range(rng.randint(1, 2)))
    sents.extend(s.format(**fmt) for s in rng.sample(TIPS, rng.randint(0, 2)))
    sents.append(rng.choice(CLOSERS).format(**fmt))
    title = f"How to {t[0].upper()}{t[1:]}"
    return f"{title}\n\n" + " ".join(sents), " ".join(summary)


def build(seed: int = SEED) -> dict[str, bytes]:
    """The three sample files' bytes, keyed by file name."""
    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    for split in ("train", "val"):
        lines = []
        for _ in range(SIZES[split]):
            art, summ = article(rng)
            msgs = [{"role": "user", "content": f"{INSTRUCTION}\n\n{art}"},
                    {"role": "assistant", "content": summ}]
            if rng.random() < 0.1:
                msgs.insert(0, {"role": "system", "content": SYSTEM})
            lines.append(json.dumps({"messages": msgs}, ensure_ascii=False))
        out[f"sft_{split}_samples.jsonl"] = ("\n".join(lines) + "\n").encode()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["input_text", "output_text"])
    for _ in range(SIZES["test"]):
        art, summ = article(rng)
        w.writerow([f"{INSTRUCTION}\n\n{art}", summ])
    out["sft_test_samples.csv"] = buf.getvalue().encode()
    return out


def main() -> None:
    for name, data in build().items():
        (HERE / name).write_bytes(data)
        print(f"wrote {HERE / name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
