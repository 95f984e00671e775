"""Supervised fine-tuning data: multi-turn catalog dialogues, real conversations, and held-out questions.

`dialogues_build` writes conversations about the catalog in the one prompt layout the engine uses,
`chat_format.messages_build(...)` (`[system, *history, context, user]`), plus the assistant's reply. Only the
last turn has a context turn, as at inference. Questions ask by topic, section, author, date and kind, or follow
up ("more like that", "more like the second one", "anything older on that", "shorter"). The context holds what a
simple retrieval finds (`dialogue_planner.LexicalIndex`): the matching items and, where the model can tell
them apart from the context line alone (title, kind, section, date, summary), one or two distractors, in a
shuffled order. Replies name items by title and cite each as `[#id]`, only items of that turn's context; when
nothing matches they say so and cite nothing.

Follow-ups are resolved as the engine's conversation state should resolve them: "more like that" → the
documents most like the last cited items; "more like the second one" → most like the second item the last
reply cited; "anything older on that" → items matching the last question dated before the oldest item cited
(one already cited item rides along in the context); "shorter" → the last cited items again, titles only.
Plain Python: no Django imports.
"""

import random
from collections.abc import Iterator, Mapping, Sequence
from itertools import count, islice

from . import dialogue_templates as tpl
from .chat_format import DEFAULT_SYSTEM_PROMPT, ContextItem, citations_ground, messages_build
from .corpus import SourceDialogue, SourceDocument
from .dialogue_planner import DialogueTurn, Planner, item_of


def dialogue_plans(
    documents: Sequence[SourceDocument], *, n: int, seed: int = 0, items_per_turn: int = 3, stream: str = "sft"
) -> list[list[DialogueTurn]]:
    """`n` planned conversations (1 to 3 turns each), their last questions cycling through every family.

    The same documents, `n`, `seed`, `items_per_turn` and `stream` give the same plans; another `stream`
    gives an independent sequence (the held-out questions use "heldout").
    """
    return list(islice(_plan_stream(documents, seed, items_per_turn, stream), max(n, 0)))


def _plan_stream(
    documents: Sequence[SourceDocument], seed: int, items_per_turn: int, stream: str
) -> Iterator[list[DialogueTurn]]:
    if not documents:
        return
    planner = Planner(documents, random.Random(f"{stream}:{seed}"), max(items_per_turn, 1))
    for i in count():
        yield planner.dialogue(tpl.FAMILIES[i % len(tpl.FAMILIES)])


def plan_messages(
    turns: Sequence[DialogueTurn],
    documents: Sequence[SourceDocument] | Mapping[int, SourceDocument],
    *,
    system: str = DEFAULT_SYSTEM_PROMPT,
) -> list[dict]:
    """A planned conversation as `messages_build(...)` lays out its last prompt, plus the last reply.

    Earlier turns are history (user and assistant only); the last turn's context items come from `documents`
    (a sequence, or a mapping by id when rendering many plans).
    """
    by_id = documents if isinstance(documents, Mapping) else {d.id: d for d in documents}
    *earlier, last = turns
    history = [(role, text) for t in earlier for role, text in (("user", t.question), ("assistant", t.reply))]
    items = [item_of(by_id[i]) for i in last.context_ids]
    messages = messages_build(question=last.question, items=items, history=history, system=system)
    return [*messages, {"role": "assistant", "content": last.reply}]


def dialogues_build(
    documents: Sequence[SourceDocument], *, n: int, seed: int = 0, items_per_turn: int = 3
) -> list[list[dict]]:
    """`n` SFT conversations about `documents`: `[system, *history, context, user, assistant]` each.

    Every citation in a reply is an item of its own turn's context; deterministic for a seed.
    """
    plans = dialogue_plans(documents, n=n, seed=seed, items_per_turn=items_per_turn)
    by_id = {d.id: d for d in documents}
    return [plan_messages(turns, by_id) for turns in plans]


def heldout_questions(
    documents: Sequence[SourceDocument], *, n: int, seed: int = 0, items_per_turn: int = 3
) -> list[dict]:
    """Up to `n` prompts for the groundedness evaluation, from a stream independent of `dialogues_build`'s.

    Each is `{"messages", "context_ids", "relevant_ids", "family", "reference"}`: the prompt without the
    answer, the ids in its context, the ids a good reply cites (never empty), the question family and the
    reply the synthetic data would give. A grounded reply cites only `context_ids` and one of `relevant_ids`.
    """
    out: list[dict] = []
    by_id = {d.id: d for d in documents}
    # Questions whose answer is "nothing" test no citation; skip them, but stop if a catalog has few answers.
    for turns in islice(_plan_stream(documents, seed, items_per_turn, "heldout"), 4 * max(n, 0)):
        last = turns[-1]
        if not last.relevant_ids:
            continue
        messages = plan_messages(turns, by_id)[:-1]
        out.append(
            {
                "messages": messages,
                "context_ids": list(last.context_ids),
                "relevant_ids": list(last.relevant_ids),
                "family": last.family,
                "reference": last.reply,
            }
        )
        if len(out) == n:
            break
    return out


def dialogue_from_source(
    dialogue: SourceDialogue,
    *,
    system: str = DEFAULT_SYSTEM_PROMPT,
    contexts: Mapping[int, Sequence[ContextItem]] | None = None,
) -> list[dict]:
    """A real conversation as chat messages ending with a reply, or [] when it has no reader turn and reply.

    Consecutive turns of one role are merged, leading assistant turns and trailing reader turns dropped.
    `contexts` maps an index of `dialogue.turns` (an assistant turn) to the catalog items it had in view,
    e.g. the items it cited. When the last reply has an entry, the result is the engine's layout,
    `[system, *history, context, user, assistant]`, and that reply keeps its citations of those items.
    Otherwise there is no context turn: `[system, user, assistant, ...]`. Citations are removed from every
    other reply: a model must not learn to cite what it cannot see.
    """
    turns: list[list] = []  # [role, text, index in dialogue.turns of its last part]
    for index, (role, text) in enumerate(dialogue.turns):
        text = text.strip()
        if role not in ("user", "assistant") or not text or (not turns and role == "assistant"):
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1] += "\n" + text
            turns[-1][2] = index
        else:
            turns.append([role, text, index])
    if turns and turns[-1][0] == "user":
        turns.pop()
    if not turns:
        return []
    items = (contexts or {}).get(turns[-1][2])
    reply = citations_ground(turns[-1][1], [item.id for item in items or ()])[0]
    earlier = [(role, citations_ground(text, ())[0] if role == "assistant" else text) for role, text, _ in turns[:-1]]
    if items is None:
        history = [{"role": role, "content": text} for role, text in earlier]
        return [{"role": "system", "content": system}, *history, {"role": "assistant", "content": reply}]
    (_, question), history = earlier[-1], earlier[:-1]
    messages = messages_build(question=question, items=list(items), history=history, system=system)
    return [*messages, {"role": "assistant", "content": reply}]
