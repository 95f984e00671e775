"""Synthetic SFT dialogues: layout, grounded citations, the chat template's assistant mask, follow-ups, held-out set."""

import re

import pytest

from training.pipelines.chat_format import END, ROLES, citations, context_text, tokenizer_train
from training.pipelines.corpus import SourceDialogue
from training.pipelines.corpus import SourceDocument as D
from training.pipelines.dialogue_planner import item_of
from training.pipelines.dialogue_templates import FAMILIES, MONTHS, ORDINALS
from training.pipelines.dialogues import dialogue_from_source, dialogue_plans, dialogues_build, heldout_questions
from training.pipelines.lexical_index import words

# fmt: off
DOCS = [
    D(1, "Jazz clubs of New Orleans", "A night tour of the jazz clubs that keep the city swinging.", "Clubs.", "Culture", ("jazz", "music"), ("Ada Park",), "2026-01-10", "article"),  # noqa: E501
    D(2, "The jazz pianist who never stops", "An interview with a jazz pianist on touring and practice.", "Talk.", "Culture", ("jazz", "interview"), ("Ben Ode",), "2026-02-14", "podcast"),  # noqa: E501
    D(3, "Jazz and the blues revival", "Why young listeners are discovering jazz and the blues.", "Essay.", "Culture", ("jazz", "blues"), ("Ada Park",), "2026-03-03", "podcast"),  # noqa: E501
    D(4, "Festival season: jazz in the park", "Highlights from the spring jazz festival in the park.", "Notes.", "Culture", ("jazz", "festival"), ("Chloe Ruiz",), "2026-04-02", "video"),  # noqa: E501
    D(5, "Climate talks end without a deal", "Negotiators leave the climate summit with no agreement on emissions.", "Report.", "Science", ("climate", "policy"), ("Dan Wu",), "2026-01-20", "article"),  # noqa: E501
    D(6, "Glaciers are melting faster", "New satellite data shows glaciers melting faster than models predicted.", "Report.", "Science", ("climate", "glaciers"), ("Ada Park",), "2026-02-05", "article"),  # noqa: E501
    D(7, "Heatwaves and the climate of cities", "How heatwaves change life in dense cities and what planners can do.", "Analysis.", "Science", ("climate", "cities"), ("Dan Wu",), "2026-03-18", "article"),  # noqa: E501
    D(8, "Climate podcast: carbon capture explained", "A plain guide to carbon capture and its limits for the climate.", "Transcript.", "Science", ("climate", "carbon"), ("Ben Ode",), "2026-04-09", "podcast"),  # noqa: E501
    D(9, "Rovers find ice on the Moon", "Two rovers confirm water ice in a crater near the lunar south pole.", "News.", "Science", ("space", "moon"), ("Chloe Ruiz",), "2026-01-28", "article"),  # noqa: E501
    D(10, "A new telescope looks at distant galaxies", "The telescope's first images show galaxies from the early universe.", "Feature.", "Science", ("space", "telescope"), ("Dan Wu",), "2026-03-07", "article"),  # noqa: E501
    D(11, "Space station crew returns home", "After six months in orbit the space station crew lands safely.", "Notes.", "Science", ("space", "station"), ("Ada Park",), "2026-04-11", "video"),  # noqa: E501
    D(12, "Cup final ends in penalties", "The football cup final was decided by a penalty shoot-out.", "Match report.", "Sport", ("football", "cup"), ("Ben Ode",), "2026-02-22", "article"),  # noqa: E501
    D(13, "The football coach rebuilding a club", "A season with the coach who rebuilt a struggling football club.", "Profile.", "Sport", ("football", "coach"), ("Chloe Ruiz",), "2026-03-25", "article"),  # noqa: E501
    D(14, "Marathon training for beginners", "A gentle plan for running your first marathon.", "Guide.", "Sport", ("running", "marathon"), ("Dan Wu",), "2026-04-06", "article"),  # noqa: E501
    D(15, "Markets rally as rates fall", "Stock markets rallied after the central bank cut interest rates.", "Report.", "Business", ("markets", "rates"), ("Ben Ode",), "2026-01-15", "article"),  # noqa: E501
    D(16, "Small businesses and rising rents", "Shop owners describe how rising rents squeeze small businesses.", "Feature.", "Business", ("rents", "business"), ("Ada Park",), "2026-02-27", "article"),  # noqa: E501
    D(17, "Markets podcast: what falling rates mean", "What lower interest rates mean for savers, borrowers and markets.", "Transcript.", "Business", ("markets", "rates"), ("Dan Wu",), "2026-03-30", "podcast"),  # noqa: E501
    D(18, "Startups chase electric bikes", "Investors back startups building electric bikes for city commuters.", "Feature.", "Business", ("startups", "bikes"), ("Chloe Ruiz",), "2026-04-10", "article"),  # noqa: E501
    D(19, "A guide to sourdough bread", "Flour, water, salt and patience: baking sourdough at home.", "Recipe.", "Culture", ("food", "bread"), ("Ben Ode",), "2026-01-05", "article"),  # noqa: E501
    D(20, "Street food markets of Bangkok", "Where to eat in the night markets of Bangkok.", "Travel.", "Culture", ("food", "travel"), ("Chloe Ruiz",), "2026-02-09", "video"),  # noqa: E501
]
# fmt: on
BY_ID = {d.id: d for d in DOCS}
N = 180  # 20 conversations ending with each family


@pytest.fixture(scope="module")
def plans():
    return dialogue_plans(DOCS, n=N, seed=0)


@pytest.fixture(scope="module")
def dialogues():
    return dialogues_build(DOCS, n=N, seed=0)


@pytest.fixture(scope="module")
def tokenizer(dialogues):
    texts = [f"{d.title}\n{d.summary}" for d in DOCS] + [m["content"] for dialogue in dialogues for m in dialogue]
    return tokenizer_train(texts, vocab_size=600)


def context_ids(messages: list[dict]) -> list[int]:
    (context,) = [m for m in messages if m["role"] == "context"]
    return [int(i) for i in re.findall(r"^\[#(\d+)\]", context["content"], re.MULTILINE)]


def last_turns(plans, family):
    return [turns for turns in plans if turns[-1].family == family]


def test_layout_is_messages_build_plus_the_reply(dialogues, plans):
    assert len(dialogues) == N
    for messages, turns in zip(dialogues, plans, strict=True):
        roles = [m["role"] for m in messages]
        history = ["user", "assistant"] * (len(turns) - 1)
        assert roles == ["system", *history, "context", "user", "assistant"]
        assert set(roles) <= set(ROLES)
        assert messages[-3]["content"] == context_text([item_of(BY_ID[i]) for i in turns[-1].context_ids])
        assert (messages[-2]["content"], messages[-1]["content"]) == (turns[-1].question, turns[-1].reply)
        assert 1 <= len(turns) <= 3


def test_replies_cite_only_their_own_context(dialogues, plans):
    for messages, turns in zip(dialogues, plans, strict=True):
        cited = citations(messages[-1]["content"])
        assert set(cited) <= set(context_ids(messages))
        assert cited == list(turns[-1].relevant_ids)
        for turn in turns:  # earlier turns too, against the context they had when planned
            assert citations(turn.reply) == list(turn.relevant_ids)
            assert set(turn.relevant_ids) <= set(turn.context_ids)
            for doc_id in turn.relevant_ids:
                assert BY_ID[doc_id].title in turn.reply  # items are named by title


def test_nothing_found_replies_cite_nothing(plans):
    empty = [turn for turns in plans for turn in turns if not turn.relevant_ids]
    assert len(empty) >= 5
    assert all(not citations(turn.reply) for turn in empty)
    assert {turn.family for turn in empty} >= {"topic", "older"}


def test_every_family_appears_as_a_last_question(plans):
    assert {turns[-1].family for turns in plans} == set(FAMILIES)
    for family in FAMILIES:
        assert any(turns[-1].relevant_ids for turns in last_turns(plans, family)), family
    assert all(len(turns) >= 2 for turns in plans if turns[-1].family in ("more", "more_nth", "older", "shorter"))


def test_dialogues_render_with_an_assistant_mask_ending_at_end_of_turn(dialogues, tokenizer):
    end_id = tokenizer.convert_tokens_to_ids(END)
    for messages in dialogues:
        encoded = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = list(encoded["input_ids"]), list(encoded["assistant_masks"])
        assert any(mask) and len(mask) == len(ids)
        last = max(i for i, keep in enumerate(mask) if keep)
        assert ids[last] == end_id == ids[-1]
        # The masked span of the final reply decodes to the reply and its end-of-turn token.
        start = last
        while start > 0 and mask[start - 1]:
            start -= 1
        assert tokenizer.decode(ids[start : last + 1]) == messages[-1]["content"] + END


def test_same_seed_same_dialogues_other_seed_others(dialogues):
    assert dialogues_build(DOCS, n=N, seed=0) == dialogues
    assert dialogues_build(list(reversed(DOCS)), n=N, seed=0) == dialogues
    assert dialogues_build(DOCS, n=N, seed=1) != dialogues


def test_items_per_turn_bounds_the_replies():
    for turns in dialogue_plans(DOCS, n=45, seed=2, items_per_turn=1):
        assert all(len(turn.relevant_ids) <= 1 for turn in turns)


def test_section_author_and_date_questions_find_the_right_items(plans):
    for turns in last_turns(plans, "section"):
        turn = turns[-1]
        section = next((s for s in ("Culture", "Science", "Sport", "Business") if s in turn.question), None)
        expected = sorted((d for d in DOCS if d.section == section), key=lambda d: d.date, reverse=True)[:3]
        assert list(turn.relevant_ids) == [d.id for d in expected]  # the newest first; none for unknown sections
    for turns in last_turns(plans, "author"):
        turn = turns[-1]
        assert set(turn.context_ids) == set(turn.relevant_ids)  # authors are not on the context line
        assert all(any(a in turn.question for a in BY_ID[i].authors) for i in turn.relevant_ids)
    months = [turns[-1] for turns in last_turns(plans, "date") if any(m in turns[-1].question for m in MONTHS)]
    assert months
    for turn in months:
        month = next(i for i, m in enumerate(MONTHS, 1) if m in turn.question)
        assert turn.relevant_ids and all(BY_ID[i].date[5:7] == f"{month:02d}" for i in turn.relevant_ids)


def test_topic_and_kind_questions_pick_matching_items_among_distractors(plans):
    distracted = 0
    for turns in last_turns(plans, "topic") + last_turns(plans, "kind"):
        turn = turns[-1]
        for doc_id in turn.context_ids:
            doc = BY_ID[doc_id]
            kind_ok = doc.kind in turn.question.casefold() or turn.family == "topic"
            asks_topic = turn.family == "topic" or re.search(r" (about|on) ", turn.question)
            text_words = [*words(f"{doc.title} {doc.summary}"), doc.section.casefold()]
            topic_ok = not asks_topic or any(w in turn.question.casefold() for w in text_words)
            if doc_id in turn.relevant_ids:
                assert kind_ok and topic_ok, (turn, doc)
            else:
                distracted += 1
    assert distracted >= 10


def test_more_like_the_nth_one_resolves_to_that_item(plans):
    resolved = 0
    for turns in last_turns(plans, "more_nth"):
        prev, turn = turns[-2], turns[-1]
        nth = next(i for i, word in enumerate(ORDINALS) if f"{word} one" in turn.question)
        ref = BY_ID[citations(prev.reply)[nth]]
        shown = {i for t in turns[:-1] for i in t.relevant_ids}
        assert not shown & set(turn.relevant_ids)
        ref_words = set(words(f"{ref.title} {' '.join(ref.tags)}")) - {"podcast", "video"}
        for doc_id in turn.relevant_ids:
            doc = BY_ID[doc_id]
            assert ref_words & set(words(f"{doc.title} {doc.summary} {' '.join(doc.tags)} {doc.section}"))
        if "jazz" in ref.tags and any("jazz" in d.tags and d.id not in shown | {ref.id} for d in DOCS):
            assert turn.relevant_ids and "jazz" in BY_ID[turn.relevant_ids[0]].tags  # the closest comes first
            resolved += 1
    assert resolved >= 1


def test_anything_older_gives_older_items_on_the_same_question(plans):
    found = 0
    for turns in last_turns(plans, "older"):
        prev, turn = turns[-2], turns[-1]
        cutoff = min(BY_ID[i].date for i in prev.relevant_ids)
        assert all(BY_ID[i].date < cutoff for i in turn.relevant_ids)
        assert set(turn.context_ids) & set(prev.relevant_ids)  # a newer item already cited rides along
        assert not set(turn.relevant_ids) & set(prev.relevant_ids)
        if prev.family == "section" and turn.relevant_ids:
            assert {BY_ID[i].section for i in turn.relevant_ids} == {BY_ID[prev.relevant_ids[0]].section}
            found += 1
    assert found >= 1


def test_more_like_that_and_shorter(plans):
    for turns in last_turns(plans, "more"):
        shown = {i for t in turns[:-1] for i in t.relevant_ids}
        assert not shown & set(turns[-1].relevant_ids)
        refs = [BY_ID[i] for i in turns[-2].relevant_ids]
        ref_words = set(words(" ".join(f"{d.title} {' '.join(d.tags)}" for d in refs))) - {"podcast", "video"}
        for doc_id in turns[-1].relevant_ids:
            doc = BY_ID[doc_id]
            assert ref_words & set(words(f"{doc.title} {doc.summary} {' '.join(doc.tags)} {doc.section}"))
    for turns in last_turns(plans, "shorter"):
        prev, turn = turns[-2], turns[-1]
        assert turn.context_ids == prev.relevant_ids
        assert set(turn.relevant_ids) <= set(prev.relevant_ids) and turn.relevant_ids
        assert len(turn.reply) < len(prev.reply)


def test_heldout_questions_are_grounded_prompts_from_another_stream(dialogues):
    heldout = heldout_questions(DOCS, n=40, seed=0)
    assert len(heldout) == 40
    sft_prompts = [messages[:-1] for messages in dialogues]
    assert sum(item["messages"] in sft_prompts for item in heldout) < 20
    for item in heldout:
        assert item["messages"][-1]["role"] == "user" and item["messages"][-2]["role"] == "context"
        assert context_ids(item["messages"]) == item["context_ids"]
        assert item["relevant_ids"] and set(item["relevant_ids"]) <= set(item["context_ids"])
        assert citations(item["reference"]) == item["relevant_ids"]
    assert heldout_questions(DOCS, n=40, seed=0) == heldout


def test_real_conversations_become_messages_without_ungrounded_citations(tokenizer):
    source = SourceDialogue(
        id="c1",
        turns=(
            ("assistant", "Hello! Ask me anything."),
            ("user", "Anything on jazz?"),
            ("user", "Podcasts if possible."),
            ("assistant", "Try Jazz and the blues revival [#3] and The jazz pianist who never stops [#2]."),
            ("user", "Thanks, bye"),
        ),
    )
    messages = dialogue_from_source(source)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"] == "Anything on jazz?\nPodcasts if possible."
    assert messages[2]["content"] == "Try Jazz and the blues revival and The jazz pianist who never stops."
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    mask = list(encoded["assistant_masks"])
    assert any(mask) and mask[-1] == 1 and encoded["input_ids"][-1] == tokenizer.convert_tokens_to_ids(END)
    assert dialogue_from_source(SourceDialogue(id="c2", turns=(("user", "Hi?"),))) == []


def test_a_real_reply_keeps_citations_of_the_items_it_had_in_view(tokenizer):
    source = SourceDialogue(
        id="c3",
        turns=(
            ("user", "Anything on climate?"),
            ("assistant", "Try Glaciers are melting faster [#6]."),
            ("user", "More like that."),
            ("assistant", "Climate talks end without a deal [#5] and Rovers find ice on the Moon [#9]."),
        ),
    )
    messages = dialogue_from_source(source, contexts={1: [item_of(BY_ID[6])], 3: [item_of(BY_ID[5])]})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "context", "user", "assistant"]
    assert messages[2]["content"] == "Try Glaciers are melting faster."  # history: no context in view
    assert context_ids(messages) == [5]
    assert messages[-1]["content"] == "Climate talks end without a deal [#5] and Rovers find ice on the Moon."
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert encoded["assistant_masks"][-1] == 1
    # Without an entry for the last reply there is no context turn, and no citation survives.
    assert [m["role"] for m in dialogue_from_source(source, contexts={1: [item_of(BY_ID[6])]})] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
