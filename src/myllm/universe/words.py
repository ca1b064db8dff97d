"""The vocabulary of the built-in universe: the word pools that worlds and books draw from.

Pools are tuples, so they can key the writer's option cache (writer.py). The options of one
choice must be prefix-free, which chooser.py checks at run time.
"""

from __future__ import annotations

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


def count(n: int, noun: tuple[str, str]) -> str:
    """ "1 plum", "3 plums": the number and the noun in the matching number."""
    return f"{n} {noun[0] if n == 1 else noun[1]}"


def ordinal(n: int) -> str:
    """ "1st", "2nd", "11th", "23rd"."""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
