"""Wording of the synthetic catalog dialogues: questions, reply openings and "nothing found" replies per family.

Several phrasings per situation so that the model learns the situation, not one sentence. Placeholders:
{topic}, {section}, {author}, {period}, {kind}, {kinds}, {Kinds}, {ordinal}. Plain Python: no Django imports.
"""

# Question families: the first five open a conversation, the last four follow up on the previous reply.
BASE_FAMILIES = ("topic", "section", "author", "date", "kind")
FOLLOW_UP_FAMILIES = ("more", "more_nth", "older", "shorter")
FAMILIES = BASE_FAMILIES + FOLLOW_UP_FAMILIES

QUESTIONS = {
    "topic": (
        "Anything about {topic}?",
        "What do you have on {topic}?",
        "Tell me about {topic}.",
        "I'm interested in {topic}.",
        "Any stories on {topic}?",
        "{topic}?",
        "Got something on {topic} for me?",
    ),
    "section": (
        "What's new in {section}?",
        "Anything new in {section}?",
        "Show me the latest {section} stories.",
        "What's in {section} today?",
        "Latest from {section}?",
    ),
    "author": (
        "Anything by {author}?",
        "What has {author} done lately?",
        "Show me {author}'s latest.",
        "Any pieces from {author}?",
    ),
    "date": (
        "What did you publish {period}?",
        "Anything published {period}?",
        "What came out {period}?",
        "Show me what was published {period}.",
    ),
    "kind": (
        "Any {kinds} about {topic}?",
        "Do you have {kinds} on {topic}?",
        "I'd like a {kind} about {topic}.",
        "{Kinds} on {topic}?",
    ),
    "kind_only": (
        "Any new {kinds}?",
        "What {kinds} do you have?",
        "Show me your latest {kinds}.",
    ),
    "more": (
        "More like that.",
        "More like that, please.",
        "Anything similar?",
        "Got more like those?",
        "Show me similar ones.",
    ),
    "more_nth": (
        "More like the {ordinal} one.",
        "Anything similar to the {ordinal} one?",
        "I liked the {ordinal} one, more like it?",
        "More like the {ordinal} one, please.",
    ),
    "older": (
        "Anything older on that?",
        "Anything older?",
        "What about older pieces on that?",
        "Go further back.",
    ),
    "shorter": (
        "Shorter.",
        "Shorter, please.",
        "Can you make that shorter?",
        "Too long, shorten it.",
        "In brief?",
    ),
}

OPENINGS = {
    "topic": ("Here's what I found on {topic}:", "A few picks about {topic}:", "On {topic}:", "These cover {topic}:"),
    "section": ("New in {section}:", "The latest in {section}:", "Fresh from {section}:"),
    "author": ("From {author}:", "Recent work by {author}:", "{author}'s latest:"),
    "date": ("Published {period}:", "Here's what came out {period}:", "What we published {period}:"),
    "kind": ("{Kinds} about {topic}:", "Some {kinds} on {topic}:", "Try these {kinds}:"),
    "kind_only": ("Recent {kinds}:", "Our latest {kinds}:", "Here are some {kinds}:"),
    "more": ("More like that:", "You might also like:", "Similar picks:"),
    "more_nth": ("Close to the {ordinal} one:", "Similar to the {ordinal} one:", "If you liked the {ordinal} one:"),
    "older": ("Older pieces on that:", "Going further back:", "From the archive:"),
}

NOTHING = {
    "topic": (
        "I couldn't find anything about {topic} in the catalog.",
        "Nothing on {topic} yet, sorry.",
        "The catalog has nothing about {topic} so far.",
    ),
    "section": ("Nothing new in {section} right now.", "I found nothing in {section}."),
    "author": ("I couldn't find anything by {author}.", "Nothing by {author} in the catalog."),
    "date": ("Nothing was published {period}.", "I found nothing published {period}."),
    "kind": ("No {kinds} about {topic} yet.", "I couldn't find {kinds} on {topic}."),
    "kind_only": ("No {kinds} yet.", "There are no {kinds} in the catalog yet."),
    "more": ("I couldn't find anything similar.", "That's all I have along those lines."),
    "more_nth": ("I couldn't find anything close to the {ordinal} one.", "Nothing similar to the {ordinal} one."),
    "older": ("There's nothing older on that.", "That's the oldest I have on it."),
}

# Short forms for "shorter": the same items, titles and citations only.
SHORT_OPENINGS = ("In short:", "Briefly:", "", "Shorter:")
TOP_PICK = ("Top pick: {item}.", "Just one: {item}.", "{item}.")

ORDINALS = ("first", "second", "third")
KIND_PLURALS = {"article": "articles", "video": "videos", "podcast": "podcasts", "post": "posts"}
MONTHS = "January February March April May June July August September October November December".split()
RELATIVE_PERIODS = (("last week", 7), ("in the last few days", 3), ("over the past two weeks", 14))

# Topics and names no catalog is likely to hold, for questions whose honest answer is "nothing".
ABSENT_TOPICS = ("volcanoes", "origami", "beekeeping", "chess openings", "submarines", "tango", "lighthouses")
ABSENT_AUTHORS = ("Jordan Blake", "Mia Kowalski", "Hugo Santos", "Priya Raman")
ABSENT_SECTIONS = ("Gardening", "Motoring", "Crosswords")

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers him his how i if in into is it its itself just me more most my new no nor not now of off on once only or
    other our out over own same she should so some such than that the their them then there these they this those
    through to too under until up very was we were what when where which while who whom why will with you your
    says said year years how why what's it's new one two three""".split()
)
