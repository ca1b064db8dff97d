"""What the books of the built-in universe say: word pools, paraphrase tables, chapter writers.

`universe.py` owns the world, the exact-probability machinery (`Chooser`) and the public API;
this file owns the prose. A chapter writer talks to the chooser through two verbs only:
`emit(text)` for text that follows from what came before, and `choose(options, probs)` for a
random choice, which writes the chosen option into the book. Rules every writer here keeps
(they are what make the text learnable by a small model and the entropy floor exact):

- Options at one choice point are whole rendered strings, pairwise prefix-free (the chooser
  asserts it). They carry their own trailing punctuation, so "rain" vs "rainy" never clash.
- Fixed text depends only on earlier choices that are still visible nearby: every paragraph
  names its people before a pronoun refers to them, and headings name their content.
- Facts are never random: a person's town, trade, pet, pet's name, food and friend come from
  the world. Random choices are things that can differ between books: days, weather,
  journeys, counts, phrasing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# --- Word pools. All names are single ASCII words; no name is a prefix of another. ---------
FEMALE_NAMES = tuple((
    "Alma Bella Clara Dora Edith Fiona Greta Hazel Iris Jenna Kira Lena Mira Nora Olive Petra Rosa Sylvie "
    "Tessa Ursula Vera Wanda Yara Zoe Agnes Bianca Celia Daphne Elsa Flora Gemma Helga Ingrid Joy Lucy Maud Nina "
    "Opal Poppy Ruth Sara Thea Una Violet Wren Beth Cora Enid Freya Gwen Holly Ivy June Kate Lola Molly Pearl"
).split())
MALE_NAMES = tuple((
    "Arthur Bruno Calvin Dexter Edwin Felix Gordon Hugo Ivan Jasper Kevin Leo Milo Nigel Oscar Percy Rufus "
    "Silas Toby Victor Walter Xavier Yusuf Zack Abel Basil Clive Duncan Ernest Frank Gus Harold Igor Jonah Kurt "
    "Lionel Martin Ned Otto Pablo Ralph Simon Tom Vince Wesley Alfie Barnaby Cyril Dennis Elmer"
).split())
SURNAMES = tuple((
    "Fenwick Ashby Barlow Carter Dalton Ellis Fletcher Garner Hollis Ingram Jarvis Kemp Lowell Marsh Norris "
    "Oakley Pryce Quill Radley Sutton Thorne Upton Vance Walsh Yates Abbott Bramble Cobb Dunmore Everett Finch Gale "
    "Hart Ives Jessop Kirby Lindley Mercer Nash Orwin Pike Redfern Sparrow Tate Underhill Vesey Whitlock Blyth Crane "
    "Drake Elwood Frost Grove Hale Irwin Jolly Knox Lacey Moss Nolan Osborne Penrose Rook Stroud Wade Yorke"
).split())
TOWN_NAMES = tuple((
    "Oakridge Elmford Millbrook Stonehaven Riverton Brightwater Fernhill Greendale Hollowmere Kingsbridge "
    "Larkspur Meadowbank Northwick Pinecrest Redcliff Saltmarsh Thornbury Willowdale Ambergate Duskvale"
).split())
PET_NAMES = tuple((
    "Pip Biscuit Coco Dot Fudge Ginger Honey Jinx Kiwi Lulu Mango Nutmeg Pepper Pickle Rusty Sooty Tango "
    "Toffee Whiskers Ziggy Bingo Button Clover Dusty Echo Fluff Gizmo Hopper Inky Jelly Kipper Lucky Muffin Noodle "
    "Patch Pebble Puddle Rolo Sprout Sunny Tiger Waffle Widget Zorro Acorn Bubbles Cookie Domino Fidget Juniper "
    "Marble Nibbles Peanut Pumpkin Quincy Rascal Scout Smudge Squeak Thistle Truffle Twiggy Velvet Wobble Yoyo"
).split())

# Trades, species and foods start with a consonant, so "works as a" / "has a pet" never leak
# the answer through "a" vs "an". Each trade has what it makes (verb, singular, plural).
TRADES: dict[str, tuple[str, str, str]] = {
    "baker": ("baked", "loaf", "loaves"), "potter": ("made", "pot", "pots"),
    "weaver": ("wove", "blanket", "blankets"), "smith": ("made", "horseshoe", "horseshoes"),
    "farmer": ("dug up", "potato", "potatoes"), "miller": ("ground", "sack of flour", "sacks of flour"),
    "tailor": ("sewed", "coat", "coats"), "carpenter": ("built", "chair", "chairs"),
    "fisher": ("caught", "fish", "fish"), "cook": ("cooked", "pie", "pies"),
    "jeweller": ("made", "ring", "rings"), "candlemaker": ("made", "candle", "candles"),
    "painter": ("painted", "picture", "pictures"), "gardener": ("picked", "rose", "roses"),
    "cobbler": ("mended", "shoe", "shoes"), "beekeeper": ("filled", "jar of honey", "jars of honey"),
}
# Each species has three things its animals do, for pet chapters.
SPECIES: dict[str, tuple[str, str, str]] = {
    "cat": ("chased a mouse", "slept in the sun", "climbed a tree"),
    "dog": ("fetched a stick", "dug a hole", "barked at a cart"),
    "rabbit": ("ate a carrot", "hopped in the grass", "hid under a bush"),
    "parrot": ("sang a song", "said hello", "flew to the roof"),
    "goat": ("ate some grass", "climbed a rock", "pulled a rope"),
    "tortoise": ("ate a leaf", "walked to the gate", "slept all day"),
    "hamster": ("ran in its wheel", "filled its cheeks", "slept in the straw"),
    "pony": ("ran in the field", "ate an apple", "pulled a cart"),
    "duck": ("swam in the pond", "caught a fly", "waddled to the river"),
    "goose": ("chased a dog", "honked at the door", "swam in the lake"),
}
FOODS = ("apples", "pears", "plums", "cherries", "grapes", "figs", "lemons", "carrots", "peaches", "melons",
         "tomatoes", "mushrooms", "onions", "radishes", "beans", "walnuts")
# Countable things: (singular, plural). The first 22 are food (eaten in stories, fed to pets).
GOODS = tuple((w, p) for w, p in (x.split("/") for x in (
    "apple/apples pear/pears plum/plums egg/eggs lemon/lemons carrot/carrots cherry/cherries fig/figs "
    "peach/peaches melon/melons cake/cakes bun/buns tomato/tomatoes onion/onions cookie/cookies potato/potatoes "
    "turnip/turnips cabbage/cabbages radish/radishes walnut/walnuts sausage/sausages pie/pies candle/candles "
    "basket/baskets bottle/bottles spoon/spoons cup/cups bowl/bowls ribbon/ribbons rope/ropes lamp/lamps "
    "kettle/kettles").split()))
FOOD = GOODS[:22]
ANIMALS = tuple((w, p) for w, p in (x.split("/") for x in (
    "duck/ducks swan/swans frog/frogs horse/horses cow/cows sheep/sheep owl/owls fox/foxes deer/deer crow/crows "
    "hare/hares badger/badgers heron/herons robin/robins squirrel/squirrels pig/pigs").split()))
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEATHER = ("sunny", "rainy", "windy", "cloudy", "foggy", "snowy", "stormy", "misty", "cold", "warm", "bright", "grey")
TIMES = ("morning", "afternoon", "evening")
TRANSPORT = ("on foot", "by cart", "by boat", "on horseback", "by bicycle", "by train", "by coach", "by wagon")
ROAD = ("long", "short", "dusty", "muddy", "quiet", "busy", "steep", "narrow", "wide", "rocky", "green", "winding")
MOODS = ("happy", "tired", "hungry", "sleepy", "cheerful", "proud", "calm", "glad", "merry", "restless", "thirsty",
         "quiet")
BUILDINGS = ("library", "old mill", "bakery", "school", "harbour", "castle", "tower", "garden", "museum", "chapel",
             "town hall", "theatre", "lighthouse", "windmill", "market hall", "toy shop")
PLACES = ("at the market in ", "by the river in ", "on the bridge in ", "in the square of ", "at the inn in ")
ACTIVITIES = ("walked by the river", "played cards", "baked a cake", "went fishing", "painted the fence",
              "read stories", "picked berries", "sang songs", "flew a kite", "planted a tree", "climbed a hill",
              "rowed a boat", "fed the ducks", "mended a cart", "made jam", "watched the stars")
GREETINGS = ("Hello", "Good morning", "Good day", "Hi", "Well met")
FAREWELLS = ("Goodbye", "See you soon", "Farewell", "Take care")
CHEERS = ("What a lovely day", "I am so glad we are friends", "Let us do this again soon", "That was fun")
THANKS = ("Thank you", "How kind of you", "Oh, thank you", "Many thanks")
TITLES = ("Tales from ", "Stories of ", "Days in ", "Letters from ", "Life in ", "The Roads of ", "Seasons in ")
PET_IDLE = ("slept by the door", "watched the work", "played outside", "waited for supper")
FRIENDS = ("{a[F]}'s best friend is {a[friend]}.", "{a[f]} and {b[f]} are best friends.",
           "{b[F]}'s best friend is {b[friend]}.")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
TOPICS = ("birds", "boats", "stars", "kings", "trees", "bees", "ships", "castles", "rivers", "dragons", "giants",
          "pirates", "horses", "islands", "mountains", "wizards")
GAMES = ("cards", "chess", "dice", "marbles", "ball", "tag", "dominoes", "hide and seek")
SPOTS = ("river", "mill", "bridge", "well", "woods", "lake", "church", "farm", "hill", "meadow", "pond", "orchard",
         "gate", "station", "harbour", "market")
SIGNOFFS = ("Your friend,", "Best wishes,", "With love,", "Yours truly,")
OPENINGS = ("On a", "It was a")
GOES = ("went to", "travelled to", "set off for")
GATHERINGS = ("fair", "market", "festival", "wedding", "race")
LETTER_WHEN = (" Yesterday", " Last week", " This morning")
VISITS = ("bought", "met", "saw", "visited the", "ate")
EVENTS = ("bought", "gave", "saw", "walked", "read", "sold", "played")
EVENING = ("In the evening,", "At sunset,", "At night,", "Later that day,")
THEN = ("Then {f}", "Then {s}", "Later, {s}", "After that, {f}")  # event links in a paragraph
THEN_I = ("Then I", "Later, I", "After that, I", "Next I")  # ... in a letter

# --- Facts. -----------------------------------------------------------------------------
# Third-person paraphrases of each attribute: (template, form). Form "full" uses the full
# name, "first" the first name, "pron" only a pronoun (allowed after the paragraph named the
# person). The first "full" template of each attribute is the CLOZE form used by the probes:
# the value comes last, so "Mira Fenwick lives in" -> " Oakridge".
FACTS: dict[str, tuple[tuple[str, str], ...]] = {
    "town": (("{F} lives in {town}.", "full"), ("{f} has a house in {town}.", "first"),
             ("{f}'s home is in {town}.", "first"), ("{S} lives in the town of {town}.", "pron"),
             ("{P} home is in {town}.", "pron")),
    "trade": (("{F} works as a {trade}.", "full"), ("{f} is a {trade}.", "first"),
              ("By trade, {f} is a {trade}.", "first"), ("{S} is a {trade}.", "pron")),
    "pet": (("{F} has a pet {pet}.", "full"), ("{f} keeps a {pet}.", "first"),
            ("{f} has a {pet} at home.", "first"), ("{S} keeps a {pet}.", "pron")),
    "pet_name": (("{F}'s pet is called {pet_name}.", "full"), ("{f}'s {pet} is named {pet_name}.", "first"),
                 ("{f} calls {p} {pet} {pet_name}.", "first"), ("{P} {pet} is called {pet_name}.", "pron")),
    "food": (("{F} likes to eat {food}.", "full"), ("{f}'s favourite food is {food}.", "first"),
             ("{f} loves {food} more than anything.", "first"), ("{P} favourite food is {food}.", "pron")),
    "friend": (("{F}'s best friend is {friend}.", "full"), ("{f} and {friend_f} are best friends.", "first"),
               ("{P} best friend is {friend}.", "pron"), ("{S} is best friends with {friend}.", "pron")),
}
ATTRIBUTES = tuple(FACTS)
CLOZE = {a: FACTS[a][0][0].rsplit(" {", 1)[0] for a in ATTRIBUTES}  # "{F} lives in"
# First-person answers in dialogue, and the questions that ask for them.
SAY = {
    "town": ("I live in {town}", "My home is in {town}", "I have a house in {town}"),
    "trade": ("I am a {trade}", "I work as a {trade}"),
    "pet": ("I have a {pet}", "I keep a {pet}"),
    "pet_name": ("My {pet} is called {pet_name}", "My {pet}'s name is {pet_name}"),
    "food": ("I love {food}", "My favourite food is {food}", "I like to eat {food}"),
    "friend": ("My best friend is {friend}", "{friend} is my best friend"),
}
SAY_TO_FRIEND = ("You are my best friend, {g}", "{g}, you are my best friend")
ASK = {
    "town": ("Where do you live, {f}?", "Which town is your home, {f}?"),
    "trade": ("What is your trade, {f}?", "What work do you do, {f}?"),
    "pet": ("Do you have a pet, {f}?", "What pet do you keep, {f}?"),
    "pet_name": ("What is your pet called, {f}?", "What is the name of your pet, {f}?"),
    "food": ("What is your favourite food, {f}?", "What do you like to eat, {f}?"),
    "friend": ("Who is your best friend, {f}?", "Tell me, {f}, who is your best friend?"),
}
ANSWER_WRAPS = ('"{X}," said {f}.', '{f} said, "{X}."', '"{X}," {f} replied.')
QUESTION_WRAPS = ('"{Q}" asked {g}.', '{g} asked, "{Q}"')
# Clauses that state a fact in passing: "Tom Ashby, the potter, bought ..." / "met Tom Ashby, who loves figs."
WHO = {
    "town": ("who lives in {town}",), "trade": ("who is a {trade}", "the {trade}"), "pet": ("who keeps a {pet}",),
    "pet_name": ("whose {pet} is called {pet_name}",), "food": ("who loves {food}",),
    "friend": ("whose best friend is {friend}", "the best friend of {friend}"),
}

# Chapter kinds: heading text after "Chapter: " (before the person's name), and weight. "Who Is Who"
# and "News" weigh most: they state facts most densely per token, and facts are what a small model
# learns last (measured with a ~6M-parameter model), so a short training run needs them often.
KINDS = (("About ", 2), ("The Journey of ", 1), ("A Meeting of ", 2), ("Market Day for ", 1),
         ("A Day at Work for ", 0.5), ("Best Friends: ", 0.5), ("The Pet of ", 0.5), ("A Letter from ", 2),
         ("News from ", 4), ("Who Is Who\n\n", 10))


def person_context(person: Any, friend: Any) -> dict[str, str]:
    """Every string a template may need about one person (pronouns included)."""
    she = person.gender == "female"
    return dict(F=person.full, f=person.first, S="She" if she else "He", s="she" if she else "he",
                P="Her" if she else "His", p="her" if she else "his", o="her" if she else "him",
                town=person.town, trade=person.trade, pet=person.pet, pet_name=person.pet_name, food=person.food,
                friend=friend.full, friend_f=friend.first)


def full_form(template: str) -> str:
    """A first-name template with full names instead: "{f} and {friend_f} are ..." -> "{F} and {friend} are ..."."""
    return template.replace("{f}", "{F}").replace("{friend_f}", "{friend}")


def count(n: int, noun: tuple[str, str]) -> str:
    return f"{n} {noun[0] if n == 1 else noun[1]}"


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


Row = tuple[Any, str, float]  # (value returned, option written, weight)


class Writer:
    """Writes books about one world through a chooser.

    `write_book(chooser, ...)` is a deterministic function of the chooser's answers, which is
    what lets `recover_choices` replay it on a text. Helpers write one choice and return the
    chosen value. `pick(key, make)` builds a choice's options with `make(*key[1:])` once per
    key and caches them: the options are a pure function of the key, and the same option sets
    recur thousands of times, so building them would otherwise dominate the cost of writing.
    """

    def __init__(self, world: Any) -> None:
        people = world.people
        by_name = {p.full: i for i, p in enumerate(people)}
        self.friend = [by_name[p.friend] for p in people]
        self.ctx = [person_context(p, people[self.friend[i]]) for i, p in enumerate(people)]
        self.n = len(people)
        self.towns = tuple(world.towns)
        self._cache: dict[tuple, tuple[tuple, tuple[str, ...], tuple[float, ...] | None]] = {}
        self.ch: Any = None

    # -- the two verbs, and helpers built on them ------------------------------------------
    def emit(self, text: str) -> None:
        self.ch.emit(text)

    def pick(self, key: tuple, make: Callable[..., Sequence[Row]]) -> Any:
        """Choose among the rows `make(*key[1:])` (weights need not sum to 1); return the value."""
        entry = self._cache.get(key)
        if entry is None:
            rows = make(*key[1:])
            weights = tuple(w for _, _, w in rows)
            entry = (tuple(v for v, _, _ in rows), tuple(o for _, o, _ in rows),
                     None if len(set(weights)) == 1 else weights)
            self._cache[key] = entry
        values, options, weights = entry
        return values[self.ch.choose(options, weights)]

    def word(self, words: tuple[str, ...], suffix: str = " ", exclude: Any = None) -> Any:
        """Choose uniformly among `words`, writing the word and `suffix`."""
        return self.pick(("w", words, suffix, exclude),
                         lambda words, suffix, exclude: [(w, w + suffix, 1.0) for w in words if w != exclude])

    def person(self, fmt: str = "{F}\n\n", exclude: tuple[int, ...] = ()) -> int:
        """Choose a person uniformly (except `exclude`), writing `fmt` rendered for them."""
        return self.pick(("p", fmt, exclude), lambda fmt, exclude: [
            (i, fmt.format(**c), 1.0) for i, c in enumerate(self.ctx) if i not in exclude])

    def number(self, lo: int, hi: int, noun: tuple[str, str] | None = None, suffix: str = " ") -> int:
        """Choose n uniformly in lo..hi, writing "n" (or "n nouns") and `suffix`."""
        return self.pick(("n", lo, hi, noun, suffix), lambda lo, hi, noun, suffix: [
            (n, (count(n, noun) if noun else str(n)) + suffix, 1.0) for n in range(lo, hi + 1)])

    def counted(self, lo: int, hi: int, nouns: tuple[tuple[str, str], ...], suffix: str) -> tuple[int, tuple]:
        """ "3 apples" + suffix: a count, then a noun in the matching number; returns both."""
        n = self.number(lo, hi)
        noun = self.pick(("counted", nouns, n == 1, suffix), lambda nouns, one, suffix: [
            (x, x[0 if one else 1] + suffix, 1.0) for x in nouns])
        return n, noun

    def coins(self, suffix: str = ".") -> int:
        return self.number(2, 99, ("coin", "coins"), suffix)

    def date(self, suffix: str = ", ") -> None:
        """ "the 3rd of May" + suffix."""
        self.pick(("day",), lambda: [(n, f"the {ordinal(n)} of ", 1.0) for n in range(1, 29)])
        self.word(MONTHS, suffix)

    def listing(self, nouns: tuple[tuple[str, str], ...], end: str) -> None:
        """1-4 distinct counted nouns ("3 apples", "3 apples and 1 egg", "3 apples, 1 egg and 5 plums"),
        then `end`. After ", " the list must go on; after " and " it must stop."""
        used: tuple[int, ...] = ()
        link = ""
        while True:
            n = self.number(1, 20)
            k = self.pick(("noun", nouns, n == 1, used), lambda nouns, one, used: [
                (k, x[0 if one else 1], 1.0) for k, x in enumerate(nouns) if k not in used])
            used = tuple(sorted(used + (k,)))
            if link == " and ":
                self.emit(end)
                return
            link = self.pick(("link", end, link, len(used) < 3), lambda end, link, room: (
                [(end, end, 2.0)] * (link != ", ") + [(" and ", " and ", 2.0)] + [(", ", ", ", 1.0)] * room))
            if link == end:
                return

    def who(self, i: int, suffix: str, none: float = 0.0) -> None:
        """", the potter" + suffix: a clause stating one random fact of person i (or, with weight
        `none`, only a space)."""
        self.pick(("who", i, suffix, none), lambda i, suffix, none: [
            (a, ", " + w.format(**self.ctx[i]) + suffix, 1.0 / len(WHO) / len(WHO[a])) for a in WHO for w in WHO[a]]
            + [(None, " ", none)] * (none > 0))

    def event(self, i: int) -> None:
        """One past-tense event of person i, written after its subject ("Mira ", "she ", "I ").

        These sentences carry most of the entropy: names, counts, lists, prices, places, all
        uniform choices that a small model learns quickly.
        """
        verb = self.word(EVENTS)
        if verb == "bought":
            self.listing(GOODS, " for ")
            self.coins(".")
        elif verb == "gave":
            self.person("{f} ", exclude=(i,))
            self.counted(1, 20, GOODS, ".")
        elif verb == "saw":
            self.listing(ANIMALS, " near the ")
            self.word(SPOTS, ".")
        elif verb == "walked":
            self.number(1, 30, ("mile", "miles"), " to ")
            self.word(self.towns, ".")
        elif verb == "read":
            self.number(10, 99, suffix=" pages of a book about ")
            self.word(TOPICS, ".")
        elif verb == "sold":  # what a person makes follows from their trade
            _, one, many = TRADES[self.ctx[i]["trade"]]
            self.number(1, 9, (one, many), " for ")
            self.coins(".")
        else:
            self.word(GAMES, " with ")
            self.person("{f} for ", exclude=(i,))
            self.number(1, 9, ("hour", "hours"), ".")

    def events(self, i: int, links: tuple[str, ...], end: str = "\n\n", least: int = 2) -> None:
        """`least` or more events of person i (the first subject already written), joined by `links`."""
        self.event(i)
        k = 1
        while self.pick(("links", i, links, end, k >= least), lambda i, links, end, may_end: (
                [(j, " " + t.format(**self.ctx[i]) + " ", 1.0) for j, t in enumerate(links)]
                + [(-1, end, len(links) / 2)] * may_end)) >= 0:
            self.event(i)
            k += 1

    def facts(self, i: int) -> None:
        """All six facts of person i, in random order and random paraphrase.

        Until a sentence has named the person, only name-bearing forms are allowed.
        """
        left: tuple[str, ...] = ATTRIBUTES
        lead = ""
        while left:
            a = self.pick(("facts", i, left, lead), self.fact_rows)
            left, lead = tuple(x for x in left if x != a), " "

    def fact_rows(self, i: int, left: tuple[str, ...], lead: str) -> list[Row]:
        c = self.ctx[i]
        rows = []
        for a in left:
            forms = [t for t, form in FACTS[a] if lead or form != "pron"]
            rows += [(a, lead + t.format(**c), 1.0 / (len(left) * len(forms))) for t in forms]
        return rows

    # -- book and chapters -----------------------------------------------------------------
    def write_book(self, chooser: Any, fewest: int, most: int, p_end: float) -> None:
        """Title, then `fewest` to `most` chapters: in between, each chapter end chooses to go on or end."""
        self.ch = chooser
        self.word(TITLES, "")
        self.word(self.towns, "\n\nChapter: ")
        for n in range(1, most + 1):
            self.chapter()
            if n == most or (n >= fewest and p_end >= 1.0):
                self.emit("The End.\n")
                return
            if n < fewest:
                self.emit("Chapter: ")
            elif self.ch.choose(("Chapter: ", "The End.\n"), (1.0 - p_end, p_end)) == 1:
                return

    def chapter(self) -> None:
        """A chapter of a random kind; its heading names what it is about."""
        kind = self.pick(("kind",), lambda: [(k, k, float(w)) for k, w in KINDS])
        self.chapters[kind]()

    @property
    def chapters(self) -> dict[str, Callable[[], None]]:
        return {"About ": self.about, "The Journey of ": self.journey, "A Meeting of ": self.meeting,
                "Market Day for ": self.market, "A Day at Work for ": self.work, "Best Friends: ": self.friends,
                "The Pet of ": self.pet, "A Letter from ": self.letter, "News from ": self.news,
                "Who Is Who\n\n": self.notes}

    def about(self) -> None:
        """An introduction: all six facts, then a day in the person's life."""
        i = self.person()
        self.facts(i)
        self.emit("\n\nOn ")
        self.date()
        self.emit(self.ctx[i]["f"] + " ")
        self.events(i, THEN)

    def journey(self) -> None:
        """From home to another town and back, with the pet; what happened there."""
        i = self.person()
        c = self.ctx[i]
        t = self.word(OPENINGS)
        self.word(WEATHER)
        self.word(WEEKDAYS)
        self.word(TIMES, ", " if t == "On a" else ". ")
        self.emit(f"{c['F']} left {c['town']} with {c['p']} {c['pet']} {c['pet_name']}. ")
        self.pick(("went", i), lambda i: [(v, f"{self.ctx[i]['S']} {v} ", 1.0) for v in GOES])
        dest = self.word(self.towns, " ", exclude=c["town"])
        self.word(TRANSPORT, ".")
        self.emit(" The road was ")
        road = self.word(ROAD, " and ")
        self.word(ROAD, ", and the trip took ", exclude=road)
        self.number(1, 9, ("hour", "hours"), ".")
        self.emit(f"\n\nIn {dest}, {c['f']} ")
        met = (i,)
        while True:
            verb = self.word(VISITS)
            if verb == "bought":
                self.listing(GOODS, " for ")
                self.coins(".")
            elif verb == "met":
                j = self.person("{F}", exclude=met)
                met = tuple(sorted(met + (j,)))
                self.who(j, ".")
            elif verb == "saw":
                self.listing(ANIMALS, " near the ")
                self.word(SPOTS, ".")
            elif verb == "visited the":
                self.word(BUILDINGS, ".")
            else:
                self.counted(1, 9, FOOD, " for lunch.")
            if self.pick(("visit", i), lambda i: [(j, " " + t.format(**self.ctx[i]) + " ", 1.0)
                                                  for j, t in enumerate(THEN)] + [(-1, "\n\n", 2.0)]) < 0:
                break
        self.word(EVENING)
        self.emit(f"{c['f']} went home to {c['town']} ")
        self.word(TRANSPORT, ".")
        self.emit(f" {c['pet_name']} was ")
        self.word(MOODS, ".\n\n")

    def meeting(self) -> None:
        """Two people meet and talk: questions answered in the first person, work, gifts."""
        a = self.person("{F} and ")
        b = self.person("{F}\n\n", exclude=(a,))
        ca, cb = self.ctx[a], self.ctx[b]
        self.emit("On ")
        self.date()
        self.emit(f"{ca['f']} met {cb['f']} ")
        self.word(PLACES, "")
        self.word(self.towns, ".\n\"")
        self.word(GREETINGS, ", ")
        self.emit(f'{cb["f"]}!" said {ca["f"]}.\n')
        done: dict[int, tuple[str, ...]] = {a: (), b: ()}  # what each has answered or given
        while True:
            move, x, y = self.pick(("turn", a, b, done[a], done[b]), self.turns)
            if move == "bye":
                break
            cx, cy = self.ctx[x], self.ctx[y]
            if move == "gift":  # the line so far: 'Mira said, "I have '
                done[x] += ("gift",)
                self.counted(1, 20, GOODS, f' for you, {cy["f"]}."\n"')
                self.word(THANKS, ", ")
                self.emit(f'{cx["f"]}!" said {cy["f"]}.\n')
            elif move == "work":
                done[y] += ("work",)
                verb, one, many = TRADES[cy["trade"]]
                self.emit(f'\n"I {verb} ')
                self.number(1, 30, (one, many), f' today," said {cy["f"]}.\n')
            else:
                done[y] += (move,)
                self.emit("\n")
                self.pick(("answer", y, x, move), self.answers)
                self.emit("\n")
        self.emit("\nThen ")
        if ca["town"] == cb["town"]:
            self.emit(f"{ca['f']} and {cb['f']} went home to {ca['town']}.\n\n")
        else:
            self.emit(f"{ca['f']} went home to {ca['town']}, and {cb['f']} went home to {cb['town']}.\n\n")

    def turns(self, a: int, b: int, done_a: tuple[str, ...], done_b: tuple[str, ...]) -> list[Row]:
        """The next line of a meeting: a question about a fact or work, a gift, or goodbye."""
        done = {a: done_a, b: done_b}
        moves = [(at, x, y) for x, y in ((a, b), (b, a)) for at in ATTRIBUTES + ("work",) if at not in done[y]]
        moves += [("gift", x, y) for x, y in ((a, b), (b, a)) if "gift" not in done[x]]
        p_bye = 0.0 if not (done_a or done_b) else (0.25 if moves else 1.0)
        rows = []
        for move, x, y in moves:
            cx, cy = self.ctx[x], self.ctx[y]
            if move == "gift":
                forms = [f'{cx["f"]} said, "I have ']
            else:
                asks = ASK[move] if move != "work" else ("How was your work today, {f}?",)
                forms = [w.format(Q=q.format(**cy), g=cx["f"]) for q in asks for w in QUESTION_WRAPS]
            rows += [((move, x, y), f, (1 - p_bye) / (len(moves) * len(forms))) for f in forms]
        for x, y in ((a, b), (b, a)):
            rows += [(("bye", x, y), f'"{w}, {self.ctx[y]["f"]}!" said {self.ctx[x]["f"]}.', p_bye / 8)
                     for w in FAREWELLS]
        return [r for r in rows if r[2] > 0]

    def answers(self, y: int, x: int, attr: str) -> list[Row]:
        """Person y answers x's question about `attr`, in the first person."""
        cy, g = self.ctx[y], self.ctx[x]["f"]
        says = SAY_TO_FRIEND if attr == "friend" and self.friend[y] == x else SAY[attr]
        return [(0, w.format(X=s.format(g=g, **cy), f=cy["f"]), 1.0) for s in says for w in ANSWER_WRAPS]

    def market(self) -> None:
        """Shopping, then one or two small sums."""
        i = self.person()
        c = self.ctx[i]
        self.emit("On ")
        self.date()
        self.emit(f"{c['F']} went to the market in {c['town']}. {c['S']} bought ")
        self.listing(GOODS, " for ")
        self.coins(".")
        self.emit(f"\n\n{c['f']} had ")
        self.sums(i)
        # Either a second sum about someone else, or the closing line.
        j = self.pick(("more", i), lambda i: [(j, f"{cj['F']} had ", 0.5 / (self.n - 1))
                                              for j, cj in enumerate(self.ctx) if j != i]
                      + [(-1, w + " ", 0.25) for w in EVENING[:2]])
        if j >= 0:
            self.sums(j)
            self.word(EVENING[:2])
        self.emit(f"{c['f']} went home to {c['town']}.\n\n")

    def sums(self, i: int) -> None:
        """One-step arithmetic with operands 1..9: "had 3 plums. She ate 2 of them. Now ... has 1 plum."

        One step only: a small model learns the a+b and a-b tables quickly, running totals slowly.
        """
        c = self.ctx[i]
        n, noun = self.counted(1, 9, FOOD, ". ")
        op = self.pick(("op", i, n > 1), self.ops)
        if op in ("bought", "given"):
            n += self.number(1, 9, suffix=" more.")
        elif op == "ate":
            n -= self.number(1, n - 1, suffix=" of them.")
        else:
            n -= self.number(1, n - 1, suffix=f" to {c['friend_f']}.")
        self.emit(f" Now {c['f']} has {count(n, noun)}.\n\n")

    def ops(self, i: int, can_take: bool) -> list[Row]:
        """One change to a count: bought, ate, gave some to the best friend, or was given some."""
        c = self.ctx[i]
        rows = [("bought", f"{c['S']} bought ", 1.0)]
        if can_take:
            rows += [("ate", f"{c['S']} ate ", 1.0), ("gave", f"{c['S']} gave ", 1.0)]
        return rows + [("given", f"{cj['F']} gave {c['o']} ", 1.0 / (self.n - 1))
                       for j, cj in enumerate(self.ctx) if j != i]

    def work(self) -> None:
        """A working day: the trade, what was made in the morning and afternoon, the sum, a sale."""
        i = self.person()
        c = self.ctx[i]
        self.pick(("trade", i), lambda i: [(t, t.format(**self.ctx[i]), 1.0)
                                           for t, form in FACTS["trade"] if form != "pron"])
        verb, one, many = TRADES[c["trade"]]
        self.emit(f" {c['S']} works hard in {c['town']}. In the morning, {c['f']} {verb} ")
        a = self.number(1, 9, (one, many), ".")
        self.emit(f" In the afternoon, {c['s']} {verb} ")
        b = self.number(1, 9, suffix=" more.")
        self.emit(f" That day, {c['f']} {verb} {count(a + b, (one, many))} in all. {c['S']} sold them to ")
        self.person("{F} for ", exclude=(i,))
        self.coins(".")
        self.emit(f"\n\n{c['pet_name']} the {c['pet']} ")
        self.word(PET_IDLE, ".\n\n")

    def friends(self) -> None:
        """Best friends: the friendship, a day together with their pets, a few words, and a day after."""
        i = self.person("{F} and {friend}\n\n")
        j = self.friend[i]
        c, d = self.ctx[i], self.ctx[j]
        self.pick(("friends", i), lambda i: [(k, t.format(a=self.ctx[i], b=self.ctx[self.friend[i]]), 1.0)
                                             for k, t in enumerate(FRIENDS)])
        self.emit(" On ")
        self.date()
        self.emit(f"{c['f']} and {d['f']} ")
        self.word(ACTIVITIES, ".")
        self.emit(f" {c['f']} brought {c['p']} {c['pet']} {c['pet_name']}, and {d['f']} brought "
                  f"{d['p']} {d['pet']} {d['pet_name']}.\n\"")
        self.word(CHEERS, ", ")
        self.emit(f'{d["f"]}!" said {c["f"]}.\n"')
        self.word(CHEERS, ", ")
        self.emit(f'{c["f"]}!" said {d["f"]}.\n\nThe next day, {d["f"]} ')
        self.events(j, THEN)

    def pet(self) -> None:
        """A pet's day: what its species does, and a treat."""
        i = self.person()
        c = self.ctx[i]
        self.pick(("pet", i), lambda i: [(t, t.format(**self.ctx[i]), 1.0)
                                         for t, form in FACTS["pet"] if form != "pron"])
        self.pick(("pet_name", i), lambda i: [(t, " " + t.format(**self.ctx[i]), 1.0) for t, _ in FACTS["pet_name"]])
        self.emit(" One ")
        self.word(WEATHER)
        self.word(WEEKDAYS, ", ")
        self.emit(f"{c['pet_name']} ")
        acts = SPECIES[c["pet"]]
        done = self.word(acts, ".")
        self.emit(f" Then {c['pet_name']} ")
        self.word(acts, ".", exclude=done)
        self.emit(f" {c['f']} gave {c['pet_name']} ")
        self.counted(1, 9, FOOD, ".")
        self.emit(f" {c['f']} was ")
        self.word(MOODS, ".\n\n")

    def letter(self) -> None:
        """A letter in the first person: four facts as "I live in ...", then "I bought ..."."""
        i = self.person()
        self.emit("Dear ")
        self.person("{f},\n", exclude=(i,))
        left: tuple[str, ...] = ATTRIBUTES
        lead = ""
        for _ in range(4):
            a = self.pick(("say", i, left, lead), lambda i, left, lead: [
                (a, lead + s.format(**self.ctx[i]) + ".", 1.0 / len(left) / len(SAY[a])) for a in left for s in SAY[a]])
            left, lead = tuple(x for x in left if x != a), " "
        self.word(LETTER_WHEN, " I ")
        self.events(i, THEN_I, end="\n")
        self.word(SIGNOFFS, "\n")
        self.emit(self.ctx[i]["F"] + "\n\n")

    def news(self) -> None:
        """Town news: a gathering, then one event each of people named in full (often with a fact)."""
        town = self.word(self.towns, "\n\nOn ")
        self.date()
        self.emit("there was a ")
        self.word(GATHERINGS, f" in {town}. More than ")
        self.number(10, 99, suffix=" people came.")
        while True:
            j = self.person(" {F}")
            self.who(j, ", ", none=0.5)
            self.event(j)
            if self.ch.choose((" There,", "\n\n"), (2.0, 1.0)) == 1:
                return

    def notes(self) -> None:
        """Facts about people picked at random, one sentence each, mostly in the cloze form.

        This is where facts are repeated most; a fresh person per sentence keeps it informative.
        """
        while True:
            i = self.person("{F}")
            self.pick(("note", i), self.note_rows)
            if self.ch.choose((" ", "\n\n"), (0.9, 0.1)) == 1:
                return

    def note_rows(self, i: int) -> list[Row]:
        """The rest of a sentence that began with person i's full name; the cloze form weighs 3."""
        c = self.ctx[i]
        rows = []
        for a in ATTRIBUTES:
            forms = [full_form(t) for t, form in FACTS[a] if form != "pron" and t[:3] in ("{F}", "{f}")]
            rows += [(a, t.format(**c)[len(c["F"]):], (3.0 if k == 0 else 1.0) / (len(forms) + 2))
                     for k, t in enumerate(forms)]
        return rows
