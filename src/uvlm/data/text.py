"""Text templates: VQA questions, captions and generation instructions for SmartWatch.

All phrasings are ours, written in the style the authors describe (shared/paper/notes.md):
terse answers (`HH:MM:SS`, `NN%`, `sunny`, `top-left`), captions that open with a fixed
sentence and append attribute clauses, generation requests built like captions.
Every draw goes through the caller's numpy Generator, so text is deterministic per seed.
"""

from __future__ import annotations

import numpy as np

from uvlm.data.smartwatch import Attributes

IMAGE_TOKEN = "<image>"

# The five VQA attributes. "what" questions (prob 3/5) ask weather, time or battery;
# "where" questions (prob 2/5) ask a position; within each type the choice is uniform,
# so every attribute has probability 1/5.
VQA_ATTRIBUTES = ("time", "weather", "battery", "weather_pos", "battery_pos")
WHAT_ATTRIBUTES = ("weather", "time", "battery")
WHERE_ATTRIBUTES = ("battery_pos", "weather_pos")
P_WHAT = 3 / 5

QUESTIONS: dict[str, tuple[str, ...]] = {
    "time": (
        "What time is it?",
        "What time does the watch show?",
        "Read the time on this watch.",
        "What is the time displayed?",
        "Tell me the time shown on the watch face.",
        "Which time do the hands point to?",
        "What time can you read from the clock hands?",
        "Give the time on the watch in HH:MM:SS.",
        "What is the current time on this smart watch?",
        "What time is indicated?",
    ),
    "weather": (
        "What is the weather?",
        "What weather does the watch show?",
        "Which weather icon is displayed?",
        "What is the weather forecast on the watch?",
        "Is it sunny, cloudy or rainy?",
        "What kind of weather is shown?",
        "Tell me the weather on this watch.",
        "What does the weather icon indicate?",
        "Which weather condition appears in the image?",
        "How is the weather according to the watch?",
    ),
    "battery": (
        "What is the battery level?",
        "How much battery is left?",
        "What battery percentage does the watch show?",
        "How charged is the watch?",
        "Read the battery indicator.",
        "What percentage is displayed next to the battery?",
        "Tell me the remaining battery.",
        "What is the charge level of the watch?",
        "How full is the battery?",
        "What does the battery gauge read?",
    ),
    "weather_pos": (
        "Where is the weather icon?",
        "In which corner is the weather shown?",
        "Where is the weather displayed?",
        "Which corner holds the weather icon?",
        "Where can you find the weather on the screen?",
        "Where is the weather information located?",
        "In which corner does the weather appear?",
        "Locate the weather icon.",
        "Where on the image is the weather?",
        "What is the position of the weather icon?",
    ),
    "battery_pos": (
        "Where is the battery indicator?",
        "In which corner is the battery shown?",
        "Where is the battery displayed?",
        "Which corner holds the battery gauge?",
        "Where can you find the battery level on the screen?",
        "Where is the battery information located?",
        "In which corner does the battery appear?",
        "Locate the battery indicator.",
        "Where on the image is the battery?",
        "What is the position of the battery icon?",
    ),
}

CAPTION_QUESTIONS = (
    "What are the key components of this image?",
    "Describe this image.",
    "Describe the watch in detail.",
    "What does this image show?",
    "Give a short description of the picture.",
    "What can you see in this image?",
    "Summarize the contents of the image.",
    "Write a caption for this image.",
    "Explain what is displayed on the watch.",
    "What information does this smart watch display?",
)

CAPTION_OPENING = "The image shows a smart watch"

# Clauses appended to the opening sentence; {value} is the attribute's terse answer.
CLAUSES: dict[str, tuple[str, ...]] = {
    "time": (
        " showing the time {value}",
        " with its hands at {value}",
        " that reads {value}",
        " whose time is {value}",
    ),
    "weather": (
        ", the weather is {value}",
        ", with a {value} weather icon",
        ", the forecast says {value}",
        ", it displays {value} weather",
    ),
    "battery": (
        ", the battery is at {value}",
        ", with {value} battery left",
        ", the battery level reads {value}",
        ", charged to {value}",
    ),
    "weather_pos": (
        ", the weather icon is at the {value}",
        ", with the weather shown in the {value} corner",
        ", the weather sits at the {value}",
    ),
    "battery_pos": (
        ", the battery is displayed at the {value}",
        ", with the battery gauge in the {value} corner",
        ", the battery sits at the {value}",
    ),
}
OPTIONAL_CLAUSES = ("weather", "battery", "weather_pos", "battery_pos")
P_CLAUSE = 0.5

GENERATION_REQUESTS = (
    "Can you draw a smart watch",
    "Please draw a smart watch",
    "Generate an image of a smart watch",
    "Draw a smart watch",
    "Create a picture of a smart watch",
    "Could you generate a smart watch",
    "I would like an image of a smart watch",
    "Render a smart watch",
)
GENERATION_REPLIES = (
    "Sure, here it is:",
    "Here is the image:",
    "Of course:",
    "Here you go:",
    "Certainly, here is the watch:",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def draw_vqa_attribute(rng: np.random.Generator, exclude: tuple[str, ...] = ()) -> str:
    """A question type as the authors draw it: "what" w.p. 3/5, else "where", uniform within.

    Attributes in `exclude` are redrawn; what remains keeps its relative probability.
    """
    while True:
        group = WHAT_ATTRIBUTES if rng.random() < P_WHAT else WHERE_ATTRIBUTES
        attribute = _pick(rng, group)
        if attribute not in exclude:
            return attribute


def question(rng: np.random.Generator, attribute: str) -> str:
    return _pick(rng, QUESTIONS[attribute])


def describe(rng: np.random.Generator, attrs: Attributes,
             omit: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The attribute clauses of a caption: time always, each other attribute w.p. 0.5.

    Attributes in `omit` never appear (the biased sets). Returns the text after the
    opening words and the attributes it names, in order.
    """
    named = ["time"] + [a for a in OPTIONAL_CLAUSES if rng.random() < P_CLAUSE and a not in omit]
    text = "".join(_pick(rng, CLAUSES[a]).format(value=attrs.answer(a)) for a in named)
    return text, named


def caption(rng: np.random.Generator, attrs: Attributes,
            omit: tuple[str, ...] = ()) -> tuple[str, str, list[str]]:
    """(question, answer, named attributes) of one caption record."""
    q = _pick(rng, CAPTION_QUESTIONS)
    clauses, named = describe(rng, attrs, omit)
    return q, f"{CAPTION_OPENING}{clauses}.", named


def generation(rng: np.random.Generator, attrs: Attributes) -> tuple[str, str, list[str]]:
    """(instruction, reply, named attributes) of one text-to-image record."""
    request = _pick(rng, GENERATION_REQUESTS)
    clauses, named = describe(rng, attrs)
    reply = f"{_pick(rng, GENERATION_REPLIES)} {IMAGE_TOKEN}"
    return f"{request}{clauses}.", reply, named
