"""Paging a screen (flows/text.py): which lines each page shows, where the hint goes, room for a reason."""

from flows.text import fit_sms, paginate, shorten, ussd_cost

MORE, HINT = "98 Next", "0 Back, 00 Menu"


def test_paging_a_short_body_is_one_page_with_its_hint():
    pages = paginate(["Question?", "1. Yes", "2. No"], 178, MORE, HINT)
    assert [page.render(178) for page in pages] == ["Question?\n1. Yes\n2. No\n0 Back, 00 Menu"]
    assert pages[0].lines == range(3)


def test_paging_a_body_that_fits_only_without_its_hint_is_paged_not_shown_bare():
    lines = ["x" * 81, "y" * 81]  # 163 septets: 179 with the hint
    pages = paginate(lines, 178, MORE, HINT)
    assert len(pages) == 2 and all(page.render(178).endswith(HINT) for page in pages)


def test_paging_each_page_knows_the_lines_that_begin_on_it():
    lines = [f"{n}. " + "choice " * 6 for n in range(1, 10)]
    pages = paginate(lines, 178, MORE, HINT, reserve=30)
    assert [number for page in pages for number in page.lines] == list(range(9))
    assert all(ussd_cost(page.render(178, "r" * 29)) <= 178 for page in pages)
    assert all(page.render(178).endswith(f"\n{MORE}\n{HINT}") for page in pages[:-1])
    assert MORE not in pages[-1].render(178)


def test_paging_no_hint_on_a_root_first_page_nor_a_closing_last_page():
    lines = ["word " * 60]
    root = paginate(lines, 178, MORE, HINT, hint_first=False)
    closing = paginate(lines, 178, MORE, HINT, hint_last=False)
    assert root[0].hint is None and root[-1].hint == HINT
    assert closing[0].hint == HINT and closing[-1].hint is None
    assert paginate(["Thank you."], 178, MORE, HINT, hint_last=False)[0].render(178) == "Thank you."


def test_paging_a_paged_body_keeps_its_own_reserve():
    lines = ["word " * 60]
    assert len(paginate(lines, 178, MORE, HINT, reserve=0, paged_reserve=60)) > len(paginate(lines, 178, MORE, HINT))


def test_paging_a_head_too_long_for_its_reserve_takes_the_hint_place_then_is_cut():
    page = paginate(["z" * 160], 178, MORE, HINT)[0]
    assert page.render(178, "Wrong.") == "Wrong.\n" + "z" * 160  # no room for the hint as well
    shown = page.render(178, "A reason that is much longer than the room left on this page")
    assert ussd_cost(shown) <= 178 and shown.endswith("...\n" + "z" * 160)


def test_paging_shorten_cuts_the_longest_values_first_at_a_word():
    values = {"short": "Sukamaju", "long": "Jalan berlubang besar di depan sekolah dasar negeri dua"}
    shown = shorten(values, lambda v: sum(ussd_cost(x) for x in v.values()) <= 40)
    assert shown["short"] == "Sukamaju"
    assert shown["long"] == fit_sms(values["long"], 32) == "Jalan berlubang besar di..."
    assert shorten(values, lambda v: True) is values


def test_paging_shorten_keeps_everything_when_nothing_could_fit():
    values = {"a": "one two three", "b": "four five six"}
    assert shorten(values, lambda v: False) == values
