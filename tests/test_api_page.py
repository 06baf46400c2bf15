"""The search page end to end in headless Chromium: upload a dataset photo, see the category and the listings.

Needs Debian's `chromium` and `chromium-driver` (CI installs them); skipped with the reason when absent.
"""
from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest

from listings.config import Config
from test_api_fakes import CLASSES, FakePredictor, catalogue_rows, fake_services, live_server, synthetic_photo, tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="headless Chromium test: apt-get install -y chromium chromium-driver"
)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1800",
]


def dataset_photo(tmp_path: Path) -> Path:
    """A photo of the real dataset when it is here, else a synthetic one."""
    images = Path(Config().data.data_dir) / "images"
    if images.is_dir():
        first = next((p for p in sorted(images.iterdir())[:50] if p.suffix == ".jpg" and p.stat().st_size > 1000), None)
        if first is not None:
            return first
    path = tmp_path / "upload.jpg"
    synthetic_photo("green", "square").save(path)
    return path


def card_texts(browser, selector: str) -> list[str]:
    """One field's text on every result card, in order."""
    return [card.find_element(By.CSS_SELECTOR, selector).text for card in browser.find_elements(By.CSS_SELECTOR, ".result-card")]


def in_view(browser, element_id: str) -> bool:
    """Whether the element is wholly within the window."""
    script = "const r = document.getElementById(arguments[0]).getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight;"
    return browser.execute_script(script, element_id)


def first_result(browser):
    """The first result card's title and its "More like this" button."""
    card = browser.find_elements(By.CSS_SELECTOR, ".result-card")[0]
    return card.find_element(By.CSS_SELECTOR, ".title").text, card.find_element(By.CSS_SELECTOR, ".more-like")


def page_loaded(browser, url: str) -> WebDriverWait:
    """The search page opened, its categories read from the server (it is ready to search)."""
    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#category option")) == 1 + len(CLASSES))
    return wait


@contextmanager
def slow_search_sent(tmp_path: Path, browser) -> Iterator[WebDriverWait]:
    """The page of a server whose model takes a second, a search for "oak dining chair" on its way."""
    config = tiny_config(tmp_path / "artifacts")
    with live_server(config, fake_services(config, FakePredictor(delay_s=1.0))) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "text").send_keys("oak dining chair")
        browser.find_element(By.ID, "search").click()
        yield WebDriverWait(browser, 30)


API_KEY = "page-test-key"  # tiny_config(..., api_key=API_KEY): listings may be added and deleted


def write(url: str, method: str, path: str, fields: dict | None = None) -> dict:
    """A write to the API under test (POST /listings, DELETE /listings/{id}), with its key."""
    body = urlencode(fields).encode() if fields else None
    request = urllib.request.Request(url + path, data=body, method=method, headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def contrast(first: str, second: str) -> float:
    """WCAG's contrast ratio of two CSS colours as a browser computes them ('rgb(…)' or 'rgba(…)')."""

    def luminance(colour: str) -> float:
        channels = [int(c) / 255 for c in re.findall(r"[\d.]+", colour)[:3]]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted([luminance(first), luminance(second)], reverse=True)
    return (light + 0.05) / (dark + 0.05)


def style(browser, selector: str, name: str) -> str:
    """One computed style property of the first element a CSS selector finds."""
    return browser.execute_script("return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]];", selector, name)


# every fetch's abort signal from then on, and which of them were aborted
RECORD_FETCHES = "window.signals = []; const send = window.fetch; window.fetch = (url, options = {}) => { signals.push(options.signal); return send(url, options); };"
ABORTED = "return signals.map((signal) => Boolean(signal && signal.aborted));"


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_a_photo_and_see_the_category_and_similar_listings(tmp_path, browser):
    config = tiny_config(tmp_path / "artifacts")
    photo = dataset_photo(tmp_path)
    with live_server(config, fake_services(config)) as url:
        wait = page_loaded(browser, url)

        browser.find_element(By.ID, "search").click()  # nothing chosen yet: the page says so, no request
        assert "Add a photo or a description" in browser.find_element(By.ID, "status").text

        browser.find_element(By.ID, "photo").send_keys(str(photo))
        wait.until(expected_conditions.visibility_of_element_located((By.ID, "preview")))
        browser.find_element(By.ID, "text").send_keys("oak dining chair")
        browser.find_element(By.ID, "search").click()

        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".result-card"))
        assert browser.find_element(By.ID, "pred").text in CLASSES
        assert browser.find_element(By.ID, "modalities").text.startswith("from the image + text")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#bars .bar-row")) == len(CLASSES)
        cards = browser.find_elements(By.CSS_SELECTOR, ".result-card")
        assert len(cards) == 12
        first = cards[0].text
        assert "£" in first and "Town" in first and re.search(r"\nscore [01]\.\d\d\n", first), first  # (1 + cosine) / 2, not a percentage
        wait.until(
            lambda d: d.execute_script(
                "const imgs = [...document.querySelectorAll('.result-card img')];"
                "return imgs.length >= 10 && imgs.every(i => i.complete && i.naturalWidth === 256);"
            )
        )
        assert "12 listings" in browser.find_element(By.ID, "status").text
        browser.save_screenshot(str(tmp_path / "page.png"))

        category = browser.find_element(By.ID, "category")
        category.find_element(By.XPATH, "option[text()='Home & Garden']").click()
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: "4 listings" in d.find_element(By.ID, "status").text)
        categories = card_texts(browser, ".category")
        assert categories and all(c.startswith("Home & Garden") for c in categories)

        # "More like this" on a result: the listings like it, the listing itself not among them
        title, more = first_result(browser)
        more.click()
        wait.until(lambda d: title in d.find_element(By.ID, "results-heading").text)
        wait.until(lambda d: "listings, ranked by" in d.find_element(By.ID, "status").text)
        assert not browser.find_element(By.ID, "prediction").is_displayed()
        titles = card_texts(browser, ".title")
        assert titles and title not in titles

        # a refused "More like this" (an empty price range) says so where the user is looking, marks
        # the fields the server names, and leaves the results the user was looking at
        browser.find_element(By.ID, "category").find_element(By.XPATH, "option[@value='']").click()
        browser.find_elements(By.CSS_SELECTOR, ".more-like")[0].click()
        wait.until(lambda d: "11 listings" in d.find_element(By.ID, "status").text)  # every other listing: a long page
        browser.find_element(By.ID, "min-price").send_keys("500")
        browser.find_element(By.ID, "max-price").send_keys("100")
        browser.set_window_size(1400, 700)  # the last card's button far below the form's status line
        last = browser.find_elements(By.CSS_SELECTOR, ".more-like")[-1]
        browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", last)
        last.click()
        wait.until(lambda d: "Refused: Min price 500 is above Max price 100" in d.find_element(By.ID, "status").text)  # the page's labels
        wait.until(lambda d: in_view(d, "status"))
        assert browser.switch_to.active_element.get_attribute("id") == "status"  # the button was disabled while it ran
        assert len(browser.find_elements(By.CSS_SELECTOR, ".result-card")) == 11
        assert [browser.find_element(By.ID, name).get_attribute("aria-invalid") for name in ("min-price", "max-price")] == ["true", "true"]


def test_the_last_search_asked_for_is_the_one_drawn(tmp_path, browser):
    """A slow search (the model busy) answering after the "More like this" asked for meanwhile (by
    Back) does not replace its results; a price is typed as the catalogue writes it; focus follows
    the new results of a "More like this" clicked."""
    config = tiny_config(tmp_path / "artifacts")
    with live_server(config, fake_services(config, FakePredictor(delay_s=1.0))) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        browser.find_element(By.ID, "text").send_keys("oak dining chair")
        browser.find_element(By.ID, "max-price").send_keys("£1,000.00")
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: "listings, ranked by" in d.find_element(By.ID, "status").text)
        prices = card_texts(browser, ".price")
        assert prices and all(p.startswith("£") for p in prices)

        title, more = first_result(browser)
        assert title in more.get_attribute("aria-label")
        more.click()  # fast: no model runs
        wait.until(lambda d: title in d.find_element(By.ID, "results-heading").text)
        assert browser.switch_to.active_element.get_attribute("id") == "results-heading"
        browser.find_element(By.ID, "search").click()  # slow: the model sleeps a second
        browser.back()  # the "More like this" again, while the search runs
        wait.until(lambda d: "ranked by that listing's" in d.find_element(By.ID, "status").text)
        time.sleep(1.5)  # the slow search has answered by now
        assert title in browser.find_element(By.ID, "results-heading").text
        assert not browser.find_element(By.ID, "search").get_attribute("disabled")


def test_clear_drops_a_search_on_its_way_and_a_search_keeps_the_focus(tmp_path, browser):
    """Clear pressed while a slow search runs leaves the page empty when its answer arrives; Search,
    pressed from the keyboard, has the focus again once the results are drawn; a file dropped beside
    the photo box is taken as the photo, not opened in place of the page."""
    with slow_search_sent(tmp_path, browser) as wait:
        browser.find_element(By.ID, "clear").click()
        time.sleep(1.5)  # the search has answered by now
        assert not browser.find_element(By.ID, "results-section").is_displayed()
        assert not browser.find_element(By.ID, "prediction").is_displayed()
        assert browser.find_element(By.ID, "status").text == "" and browser.find_element(By.ID, "search").is_enabled()

        browser.find_element(By.ID, "text").send_keys("oak dining chair")
        search = browser.find_element(By.ID, "search")
        browser.execute_script("arguments[0].focus()", search)
        search.send_keys("\n")
        wait.until(lambda d: "listings, ranked by" in d.find_element(By.ID, "status").text)
        assert browser.switch_to.active_element.get_attribute("id") == "search"

        dropped = browser.execute_script(
            "const files = new DataTransfer(); files.items.add(new File(['x'], 'chair.jpg', {type: 'image/jpeg'}));"
            "const event = new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true});"
            "document.getElementById('text').dispatchEvent(event);"
            "return [event.defaultPrevented, document.getElementById('photo').files.length, document.getElementById('drop-hint').textContent];"
        )
        assert dropped == [True, 1, "chair.jpg"]

        caveat = "drawPrediction(arguments[0], arguments[1]); return document.getElementById('modalities').textContent;"
        weak = {"pred": "A", "classes": ["A", "B"], "probabilities": [0.4, 0.3], "modalities": ["image"], "low_confidence": False}
        assert browser.execute_script(caveat, weak, True) == "from the image (uncertain: B is 30.0%; the description is not used: no word of it is known)"
        sure = {**weak, "probabilities": [0.9, 0.1], "modalities": ["image", "text"]}
        assert browser.execute_script(caveat, sure, True) == "from the image + text"


def test_the_page_checks_the_servers_limits_before_sending(tmp_path, browser):
    """A description or a number of photos over the server's limits (GET /limits) is named on the
    page as it is typed or chosen, and not sent; within them again, the search runs."""
    config = tiny_config(tmp_path / "artifacts", max_text_chars=50, max_photos=1)
    photo = dataset_photo(tmp_path)
    second = tmp_path / "second.jpg"
    second.write_bytes(photo.read_bytes())
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.execute_script("return limits !== null"))
        text = browser.find_element(By.ID, "text")
        text.send_keys("oak chair " * 6)
        status = browser.find_element(By.ID, "status")
        wait.until(lambda d: status.text == "Description: 59 characters, at most 50.")
        assert text.get_attribute("aria-invalid") == "true"
        browser.find_element(By.ID, "search").click()
        time.sleep(0.5)
        assert status.text == "Description: 59 characters, at most 50." and not browser.find_elements(By.CSS_SELECTOR, ".result-card")
        text.clear()
        text.send_keys("oak chair")
        wait.until(lambda d: status.text == "")  # within the limit again: the message goes
        emoji = "const t = document.getElementById('text'); t.value = 'chair ' + '\\u{1F600}'.repeat(45); t.dispatchEvent(new Event('input'));"
        browser.execute_script(emoji)
        wait.until(lambda d: status.text.startswith("Description: "))
        assert status.text == "Description: 51 characters, at most 50."  # characters, as the server counts them, not UTF-16 units (96)
        text.clear()
        text.send_keys("oak chair")
        wait.until(lambda d: status.text == "")
        browser.find_element(By.ID, "photo").send_keys(f"{photo}\n{second}")
        wait.until(lambda d: status.text == "Photo: 2 photos, at most 1.")
        browser.find_element(By.ID, "clear").click()
        assert status.text == "" and browser.find_element(By.ID, "text").get_attribute("aria-invalid") == "false"
        browser.find_element(By.ID, "text").send_keys("oak chair")
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: "listings, ranked by text" in status.text)


def test_every_chosen_photo_is_previewed(tmp_path, browser):
    """A listing may be searched by several photos: each shows as a thumbnail, and Clear empties them."""
    config = tiny_config(tmp_path / "artifacts")
    photo = dataset_photo(tmp_path)
    second = tmp_path / "second.jpg"
    synthetic_photo("red", "round").save(second)
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        browser.find_element(By.ID, "photo").send_keys(f"{photo}\n{second}")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#preview img")) == 2)
        thumbnails = browser.find_elements(By.CSS_SELECTOR, "#preview img")
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", t) for t in thumbnails))
        assert browser.find_element(By.ID, "drop-hint").text == "2 photos"
        browser.find_element(By.ID, "clear").click()
        assert not browser.find_elements(By.CSS_SELECTOR, "#preview img") and not browser.find_element(By.ID, "preview").is_displayed()


def test_the_api_docs_render_every_route(tmp_path, browser):
    """Swagger UI must read the OpenAPI version FastAPI writes (3.1): Swagger UI 4 showed only
    'Unable to render this definition'."""
    config = tiny_config(tmp_path / "artifacts")
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/docs")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock") or d.find_elements(By.CSS_SELECTOR, ".errors-wrapper"))
        assert not browser.find_elements(By.CSS_SELECTOR, ".errors-wrapper"), browser.find_element(By.CSS_SELECTOR, ".errors-wrapper").text
        paths = {element.get_attribute("data-path") for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/image", "/text", "/combined", "/similar", "/health"} <= paths


def test_a_refusal_names_the_pages_fields_but_keeps_the_users_words(tmp_path, browser):
    """The API's field names (`img`, `txt`) become the page's labels, but not inside the values a
    refusal quotes back, such as a file's name."""
    config = tiny_config(tmp_path / "artifacts")
    notes = tmp_path / "img-1.txt.jpg"  # an image by its name: the page sends it, the server reads its bytes
    notes.write_text("not a photo")
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.execute_script("return limits !== null"))
        browser.find_element(By.ID, "photo").send_keys(str(notes))
        browser.find_element(By.ID, "search").click()
        status = browser.find_element(By.ID, "status")
        wait.until(lambda d: status.text.startswith("Refused:"))
        assert status.text.startswith("Refused: photo 1 ('img-1.txt.jpg') was refused: not an image"), status.text


def test_the_results_field_is_checked_before_sending(tmp_path, browser):
    """Results takes a whole number from 1 to GET /limits' max_k, empty for the page's default:
    anything else is named on the page in its own words (the server's names the setting index.max_k)
    and not sent, by Search or by "More like this"."""
    config = tiny_config(tmp_path / "artifacts")
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.execute_script("return limits !== null"))
        browser.find_element(By.ID, "photo").send_keys(str(dataset_photo(tmp_path)))
        k, status = browser.find_element(By.ID, "k"), browser.find_element(By.ID, "status")
        wrong = "Results: a whole number from 1 to 100."
        for typed in ["abc", "12.5", "-3", "0", "101"]:
            k.clear()
            k.send_keys(typed)
            wait.until(lambda d: status.text == wrong)
            assert k.get_attribute("aria-invalid") == "true", typed
            browser.find_element(By.ID, "search").click()
            assert status.text == wrong, typed  # not "Searching…": nothing was sent
        k.clear()
        k.send_keys("5")
        wait.until(lambda d: status.text == "")
        assert k.get_attribute("aria-invalid") == "false"
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: status.text == "5 listings, ranked by image")

        k.clear()
        k.send_keys("0")
        wait.until(lambda d: status.text == wrong)
        first_result(browser)[1].click()
        assert status.text == wrong and browser.find_element(By.ID, "results-heading").text == "Similar listings"
        assert browser.switch_to.active_element.get_attribute("id") == "status"

        k.clear()  # empty: the page's default
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: "listings, ranked by image" in status.text)
        assert k.get_attribute("aria-invalid") == "false"


def test_photos_the_server_would_refuse_are_named_when_chosen(tmp_path, browser):
    """Photos over GET /limits' bytes together (each within its own limit), or a file that is not an
    image among them, are named on the page as they are chosen, marked on the photo field, and not sent."""
    config = tiny_config(tmp_path / "artifacts", max_upload_bytes=2**20, max_request_bytes=3 * 2**20)
    photos = []
    for number in range(1, 5):
        photos.append(tmp_path / f"photo-{number}.jpg")
        photos[-1].write_bytes(b"\xff" * (9 * 2**20 // 10))
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * (3 * 2**20 // 2))
    notes = tmp_path / "notimage.txt"
    notes.write_text("not a photo")
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.execute_script("return limits !== null"))
        field, status = browser.find_element(By.ID, "photo"), browser.find_element(By.ID, "status")
        for chosen, wrong in [
            (photos, "Photos: 3.6 MB in all, at most 3.0 MB per search."),
            ([big], "Photo: big.jpg is 1.5 MB, at most 1.0 MB."),
            (photos[:2] + [notes], "Photo: notimage.txt is not an image."),
        ]:
            field.send_keys("\n".join(str(path) for path in chosen))
            wait.until(lambda d: status.text == wrong)
            assert field.get_attribute("aria-invalid") == "true"
            browser.find_element(By.ID, "search").click()
            assert status.text == wrong  # not "Searching…": nothing was sent
            browser.find_element(By.ID, "clear").click()
            assert field.get_attribute("aria-invalid") == "false"


def test_a_later_search_aborts_an_earlier_one_and_keeps_the_focus(tmp_path, browser):
    """A search superseded by a later one (or by Clear) is aborted, not uploaded to its end and
    answered unseen, and says nothing; a superseded "More like this" leaves the focus where the user
    turned to, here the description, in which Ctrl+Enter searched."""
    with slow_search_sent(tmp_path, browser) as wait:
        status = browser.find_element(By.ID, "status")
        wait.until(lambda d: "listings, ranked by" in status.text)
        browser.execute_script(  # every fetch's abort signal, and every status the page says
            RECORD_FETCHES + "window.said = []; const line = document.getElementById('status');"
            "new MutationObserver(() => said.push(line.textContent)).observe(line, {childList: true, characterData: true, subtree: true});"
        )
        browser.execute_script(  # "More like this", then at once Ctrl+Enter in the description
            "document.querySelector('.more-like').click();"
            "const text = document.getElementById('text'); text.focus();"
            "text.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', ctrlKey: true, bubbles: true}));"
        )
        wait.until(lambda d: "listings, ranked by text" in status.text)
        assert browser.find_element(By.ID, "results-heading").text == "Similar listings"
        assert browser.switch_to.active_element.get_attribute("id") == "text"
        assert browser.execute_script(ABORTED) == [True, False]
        browser.find_element(By.ID, "search").click()
        browser.find_element(By.ID, "clear").click()
        assert browser.execute_script(ABORTED)[-1] is True
        browser.find_element(By.ID, "text").send_keys("oak chair")
        browser.find_element(By.ID, "search").click()  # then, while it runs, a search the page itself refuses
        browser.execute_script("document.getElementById('text').value = ''; document.getElementById('search-form').requestSubmit();")
        assert browser.execute_script(ABORTED)[-1] is True  # it supersedes the one on its way
        time.sleep(1.5)  # the first would have answered by now
        assert status.text == "Add a photo or a description first." and browser.find_element(By.ID, "search").is_enabled()
        said = browser.execute_script("return said;")
        assert not [line for line in said if "fail" in line or "not answering" in line], said


def test_on_a_phone_the_answer_is_brought_into_view(tmp_path, browser):
    """On a phone's narrow screen the status line is below the Search button: once a search answers,
    or is refused, the status line is scrolled into view; the focus stays on the button."""
    config = tiny_config(tmp_path / "artifacts")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 375, "height": 667, "deviceScaleFactor": 2, "mobile": True})
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        search = browser.find_element(By.ID, "search")
        for answer in ["Add a photo or a description first.", "listings, ranked by text"]:
            if answer.startswith("listings"):
                browser.find_element(By.ID, "text").send_keys("oak dining chair")
            browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", search)
            assert not in_view(browser, "status")
            search.click()
            wait.until(lambda d: answer in d.find_element(By.ID, "status").text and in_view(d, "status"))
            assert browser.switch_to.active_element.get_attribute("id") == "search"


def test_on_a_wide_screen_the_page_is_centred(tmp_path, browser):
    """Past its 1200 px the page stands in the middle of the screen, not pinned to the left."""
    config = tiny_config(tmp_path / "artifacts")
    browser.set_window_size(1920, 1080)
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        margins = (
            "const page = document.documentElement.clientWidth;"
            "return ['header', 'main'].map((tag) => { const r = document.querySelector(tag).getBoundingClientRect(); return [r.left, page - r.right]; });"
        )
        (header_left, header_right), (main_left, main_right) = browser.execute_script(margins)
        assert main_left > 300 and abs(main_left - main_right) <= 1 and header_left == main_left, (main_left, main_right, header_left)


def test_search_clicked_again_or_a_refused_more_like_this_supersedes_the_search_on_its_way(tmp_path, browser):
    """Search was disabled while a search ran, so a second click was ignored and the first answer
    drawn under the new description; a "More like this" the page refused (here, one Back returns
    to) left the search on its way to overwrite the refusal."""
    with slow_search_sent(tmp_path, browser) as wait:
        text, status = browser.find_element(By.ID, "text"), browser.find_element(By.ID, "status")
        wait.until(lambda d: "listings, ranked by" in status.text)
        browser.execute_script(RECORD_FETCHES)
        browser.find_element(By.ID, "search").click()
        text.clear()
        text.send_keys("iphone 12")
        browser.find_element(By.ID, "search").click()
        assert browser.execute_script(ABORTED) == [True, False]
        wait.until(lambda d: "listings, ranked by" in status.text)

        browser.find_element(By.ID, "search").click()  # on its way, then Back to a "More like this" the page refuses
        browser.execute_script("history.pushState(null, '', '?like=prod-01&k=0'); history.pushState(null, '', '?txt=chair'); history.back();")
        wait.until(lambda d: status.text == "Results: a whole number from 1 to 100.")
        assert browser.execute_script(ABORTED)[-1] is True
        time.sleep(1.5)  # the search would have answered by now
        assert status.text == "Results: a whole number from 1 to 100."


def test_back_forward_reload_and_a_bookmark_bring_a_search_back(tmp_path, browser):
    """Each search is a history entry, its fields in the page's address ("More like this" as like=):
    Back, Forward and Reload run it again without adding entries; a photo is not in the address, and
    the page says so; a category the server refuses, from a bookmark, is marked on its field."""
    config = tiny_config(tmp_path / "artifacts")
    photo = dataset_photo(tmp_path)
    with live_server(config, fake_services(config)) as url:
        wait = page_loaded(browser, url)
        field = lambda name: browser.find_element(By.ID, name)  # noqa: E731  (found again after each reload)
        address = lambda: browser.execute_script("return location.search;")  # noqa: E731
        entries = lambda: browser.execute_script("return history.length;")  # noqa: E731
        said = lambda words: wait.until(lambda d: field("status").text == words)  # noqa: E731

        field("text").send_keys("oak dining chair")
        browser.find_element(By.ID, "search").click()
        said("10 listings, ranked by text")  # the listings with a text
        assert address() == "?txt=oak+dining+chair&k=12"
        field("category").find_element(By.XPATH, "option[text()='Home & Garden']").click()
        browser.find_element(By.ID, "search").click()
        said("4 listings, ranked by text")
        assert address() == "?txt=oak+dining+chair&k=12&category=Home+%26+Garden"
        title, more = first_result(browser)
        more.click()
        wait.until(lambda d: title in d.find_element(By.ID, "results-heading").text)
        assert re.fullmatch(r"\?like=prod-\d\d&txt=oak\+dining\+chair&k=12&category=Home\+%26\+Garden", address())
        pushed = entries()

        browser.back()
        said("4 listings, ranked by text")
        assert browser.find_element(By.ID, "results-heading").text == "Similar listings" and field("category").get_attribute("value") == "Home & Garden"
        browser.back()
        said("10 listings, ranked by text")
        assert field("category").get_attribute("value") == "" and field("text").get_attribute("value") == "oak dining chair"
        browser.forward()
        said("4 listings, ranked by text")
        browser.forward()
        wait.until(lambda d: title in d.find_element(By.ID, "results-heading").text and "ranked by that listing's" in field("status").text)
        browser.refresh()
        wait.until(lambda d: title in d.find_element(By.ID, "results-heading").text and "ranked by that listing's" in field("status").text)
        assert field("category").get_attribute("value") == "Home & Garden" and entries() == pushed  # restoring added no entry

        browser.find_element(By.ID, "clear").click()
        assert address() == ""
        browser.find_element(By.ID, "photo").send_keys(str(photo))
        field("text").send_keys("oak chair")
        browser.find_element(By.ID, "search").click()
        said("12 listings, ranked by image + text")
        assert address() == "?txt=oak+chair&k=12&photos=1"
        browser.refresh()
        said("The photo of this search is not kept in the page's address: choose it again. 10 listings, ranked by text")
        browser.find_element(By.ID, "clear").click()
        browser.find_element(By.ID, "photo").send_keys(str(photo))
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: field("status").text.endswith("listings, ranked by image"))
        browser.refresh()
        said("The photo of this search is not kept in the page's address: choose it again.")
        assert not browser.find_element(By.ID, "results-section").is_displayed()

        browser.get(url + "/?txt=chair&category=Nonsense")  # a bookmark from another catalogue
        wait.until(lambda d: field("status").text.startswith("Refused: unknown category 'Nonsense'"))
        assert field("category").get_attribute("aria-invalid") == "true" and style(browser, "#category", "borderTopColor") == "rgb(217, 45, 32)"
        field("category").find_element(By.XPATH, "option[@value='']").click()  # mended: the mark goes
        assert field("category").get_attribute("aria-invalid") == "false"


def test_more_like_a_listing_deleted_meanwhile_keeps_the_results(tmp_path, browser):
    """"More like this" on a listing deleted since it was drawn says so in plain words, leaves the
    results, and puts the focus on the status line, visibly."""
    config = tiny_config(tmp_path / "artifacts", api_key=API_KEY)
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        browser.find_element(By.ID, "text").send_keys("oak dining chair")
        browser.find_element(By.ID, "search").click()
        status = browser.find_element(By.ID, "status")
        wait.until(lambda d: status.text == "10 listings, ranked by text")
        title, more = first_result(browser)
        write(url, "DELETE", f"/listings/{next(row['product_id'] for row in catalogue_rows() if row['title'] == title)}")
        more.click()
        wait.until(lambda d: status.text == "That listing is no longer in the catalogue.")
        assert len(browser.find_elements(By.CSS_SELECTOR, ".result-card")) == 10 and browser.find_element(By.ID, "results-section").is_displayed()
        assert all(button.is_enabled() for button in browser.find_elements(By.CSS_SELECTOR, ".more-like"))
        assert browser.switch_to.active_element.get_attribute("id") == "status"
        assert style(browser, "#status", "outlineStyle") != "none" and style(browser, "#status", "outlineWidth") != "0px"


def test_long_and_right_to_left_titles_stay_on_the_page_in_their_own_direction(tmp_path, browser):
    """On a phone, a title of one long word wraps (in the "Listings like" heading too) and a card
    clamps it, rather than widening the page; an Arabic title, place or description reads right to left."""
    config = tiny_config(tmp_path / "artifacts", api_key=API_KEY)
    long_title = "Supercalifragilisticexpialidocious" * 8
    with live_server(config, fake_services(config)) as url:
        write(url, "POST", "/listings", {"title": long_title, "category": "Home & Garden", "price": "5", "location": "Town", "product_id": "long-one"})
        right_to_left = {"title": "كرسي خشب للبيع", "category": "Home & Garden", "price": "7", "location": "القدس", "product_id": "rtl-one"}
        write(url, "POST", "/listings", right_to_left)
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 375, "height": 667, "deviceScaleFactor": 2, "mobile": True})
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        page_width = "return document.documentElement.scrollWidth;"
        text = browser.find_element(By.ID, "text")
        text.send_keys("كرسي")
        assert browser.execute_script("return getComputedStyle(arguments[0]).direction;", text) == "rtl"
        text.clear()
        text.send_keys("chair")
        browser.find_element(By.ID, "k").clear()
        browser.find_element(By.ID, "k").send_keys("20")
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text == "12 listings, ranked by text")  # the 10 with a text, and the 2 added
        assert browser.execute_script(page_width) <= 375

        def card(title: str):
            cards = browser.find_elements(By.CSS_SELECTOR, ".result-card")
            return next(c for c in cards if c.find_element(By.CSS_SELECTOR, ".title").get_attribute("textContent") == title)

        direction = "return getComputedStyle(arguments[0]).direction;"
        arabic = card("كرسي خشب للبيع")
        for field in (".title", ".location"):
            assert browser.execute_script(direction, arabic.find_element(By.CSS_SELECTOR, field)) == "rtl", field
        assert browser.execute_script(direction, card(long_title).find_element(By.CSS_SELECTOR, ".location")) == "ltr"
        clamped = card(long_title).find_element(By.CSS_SELECTOR, ".title")
        lines = browser.execute_script("const s = getComputedStyle(arguments[0]); return arguments[0].clientHeight / parseFloat(s.lineHeight);", clamped)
        assert 2.5 < lines < 3.5, lines

        arabic.find_element(By.CSS_SELECTOR, ".more-like").click()
        heading = browser.find_element(By.ID, "results-heading")
        wait.until(lambda d: "كرسي" in heading.text)
        assert browser.execute_script(direction, heading.find_element(By.TAG_NAME, "bdi")) == "rtl"
        card(long_title).find_element(By.CSS_SELECTOR, ".more-like").click()
        wait.until(lambda d: long_title in heading.text)
        assert browser.execute_script(page_width) <= 375


def test_results_are_marked_busy_while_a_search_runs_and_a_silent_server_is_given_up(tmp_path, browser):
    """While a search is on its way the earlier results are marked busy, dimmed, their buttons
    disabled, until it answers; a search with no answer in 60 s (here, made shorter) is aborted and
    said, and Search works again."""
    with slow_search_sent(tmp_path, browser) as wait:
        status, section = browser.find_element(By.ID, "status"), browser.find_element(By.ID, "results-section")
        wait.until(lambda d: "listings, ranked by" in status.text)
        busy = (  # the section's aria-busy, the results' opacity, whether every "More like this" is disabled
            "return [arguments[0].getAttribute('aria-busy'), getComputedStyle(document.getElementById('results')).opacity,"
            " [...document.querySelectorAll('.more-like')].every((b) => b.disabled)];"
        )
        assert browser.execute_script(busy, section) == ["false", "1", False]
        browser.find_element(By.ID, "search").click()  # slow: the model sleeps a second
        assert browser.execute_script(busy, section) == ["true", "0.5", True]
        wait.until(lambda d: "listings, ranked by" in status.text)
        assert browser.execute_script(busy, section) == ["false", "1", False]

        browser.execute_script(  # the page's 60 s, a third of a second
            RECORD_FETCHES + "window.later = window.setTimeout;"
            "window.setTimeout = (run, ms, ...rest) => later(run, ms === 1000 * ANSWER_WITHIN_S ? 300 : ms, ...rest);"
        )
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: status.text == "The server did not answer in 60 seconds: try again later.")
        assert browser.execute_script(ABORTED) == [True]
        assert browser.execute_script("return document.getElementById('results-section').getAttribute('aria-busy');") == "false"
        browser.execute_script("window.setTimeout = later;")
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: "listings, ranked by" in status.text)


def test_photos_over_the_pixel_limit_are_named_when_chosen(tmp_path, browser):
    """A photo over GET /limits' pixels is named on the page once its thumbnail has loaded, and not
    sent; a JPEG, which the server may decode reduced, is left to the server, whose refusal is
    marked on the photo field without naming the server's setting."""
    config = tiny_config(tmp_path / "artifacts")
    config.data.max_image_pixels = 100_000
    png, jpeg = tmp_path / "big.png", tmp_path / "big.jpg"
    synthetic_photo("red", "circle", (400, 400)).save(png)
    synthetic_photo("red", "circle", (400, 400)).save(jpeg)
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.execute_script("return limits !== null"))
        field, status = browser.find_element(By.ID, "photo"), browser.find_element(By.ID, "status")
        field.send_keys(str(png))
        wrong = "Photo: big.png has 160,000 pixels, at most 100,000."
        wait.until(lambda d: status.text == wrong)
        assert field.get_attribute("aria-invalid") == "true"
        browser.find_element(By.ID, "search").click()
        assert status.text == wrong  # not "Searching…": nothing was sent
        browser.find_element(By.ID, "clear").click()
        field.send_keys(str(jpeg))
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: status.text.startswith("Refused:"))
        assert status.text == "Refused: photo 1 ('big.jpg') was refused: too large: 400x400 decodes to 160,000 pixels, over the limit of 100,000"
        assert field.get_attribute("aria-invalid") == "true"


def test_an_answer_that_is_not_the_apis_json_is_said_plainly(tmp_path, browser):
    """A proxy's HTML page or a plain-text answer is named by its HTTP status, not a JavaScript
    SyntaxError; a detail that is a list or an object is read for its messages; a 5xx is the
    server's failure, not a refusal."""
    config = tiny_config(tmp_path / "artifacts")
    answers = [  # the body, its status, what the status line says and which field is marked
        ("<html><body><h1>502 Bad Gateway</h1></body></html>", 502, "Bad Gateway", "The server answered 502 Bad Gateway.", None),
        ("Request Entity Too Large", 413, "Payload Too Large", "The server answered 413 Payload Too Large.", None),
        (json.dumps({"detail": [{"loc": ["body", "k"], "msg": "Input should be a valid integer"}, {"msg": "Field required"}]}), 422, "",
         "Refused: Input should be a valid integer; Field required", None),
        (json.dumps({"detail": {"msg": "min_price: not a price"}}), 422, "", "Refused: Min price: not a price", "min-price"),
        (json.dumps({"detail": "internal error (RuntimeError): the server could not answer this request"}), 500, "",
         "The server failed: internal error (RuntimeError): the server could not answer this request", None),
    ]
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        browser.find_element(By.ID, "text").send_keys("oak chair")
        status = browser.find_element(By.ID, "status")
        for body, code, reason, said, marked in answers:
            browser.execute_script(
                "window.fetch = () => Promise.resolve(new Response(arguments[0], {status: arguments[1], statusText: arguments[2]}));", body, code, reason
            )
            browser.find_element(By.ID, "search").click()
            wait.until(lambda d: status.text != "Searching…")
            assert status.text == said
            invalid = [field.get_attribute("id") for field in browser.find_elements(By.CSS_SELECTOR, "[aria-invalid='true']")]
            assert invalid == ([marked] if marked else []), said


def test_the_servers_words_read_naturally_on_the_page(tmp_path, browser):
    """A refusal that names a field beside words saying what it is reads without the field's label in
    brackets; after "More like this" the status says it ranked by that listing's inputs, not the form's."""
    config = tiny_config(tmp_path / "artifacts")
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        text, status = browser.find_element(By.ID, "text"), browser.find_element(By.ID, "status")
        text.send_keys("| in London | Gumtree")  # only a listing page's boilerplate, which cleaning removes
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: status.text.startswith("Refused: Description holds "))
        assert status.text.endswith(" or both") and not re.search(r"\((Description|Photo)\)|\b(txt|img)\b", status.text), status.text
        assert text.get_attribute("aria-invalid") == "true"
        asides = ["send a description of the listing (txt), a photo (img) or both", "send a photo (img), a text (txt) or both"]
        assert browser.execute_script("return arguments[0].map(inPageWords);", asides) == [
            "send a description of the listing, a photo or both",
            "send a photo, a description or both",
        ]
        text.clear()
        text.send_keys("oak dining chair")
        assert text.get_attribute("aria-invalid") == "false"
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: status.text == "10 listings, ranked by text")
        for title, ranked in [("Green oak dining chair", "photo and text"), ("Vintage rotary dial phone", "text")]:
            card = next(c for c in browser.find_elements(By.CSS_SELECTOR, ".result-card") if c.find_element(By.CSS_SELECTOR, ".title").text == title)
            card.find_element(By.CSS_SELECTOR, ".more-like").click()
            wait.until(lambda d: status.text.endswith(f"listings, ranked by that listing's {ranked}"))


def test_the_status_takes_its_own_row_on_a_middling_screen(tmp_path, browser):
    """Between a phone's width and 900 px the status line is below Search and Clear, the whole row
    wide, not a narrow column beside them."""
    config = tiny_config(tmp_path / "artifacts")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 800, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "search").click()
        box = "const r = document.querySelector(arguments[0]).getBoundingClientRect(); return [r.top, r.bottom, r.width];"
        status_top, _, status_width = browser.execute_script(box, "#status")
        _, search_bottom, _ = browser.execute_script(box, "#search")
        row_width = browser.execute_script(box, ".actions")[2]
        assert status_top >= search_bottom and status_width == row_width, (status_top, search_bottom, status_width, row_width)


def test_the_page_is_legible_and_explains_itself(tmp_path, browser):
    """The edges of the fields and of the photo box stand 3:1 from white, a card's "no photo" 4.5:1
    from its grey; what a score means is on the page, each score pointing to it; an empty answer
    blames the filters only when there are some."""
    config = tiny_config(tmp_path / "artifacts")
    with live_server(config, fake_services(config)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        for edge in ["#text", "#k", "#min-price", "#category", "#drop", "#clear"]:
            assert contrast(style(browser, edge, "borderTopColor"), "rgb(255, 255, 255)") >= 3, edge
        browser.find_element(By.ID, "text").send_keys("oak dining chair")
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: "listings, ranked by" in d.find_element(By.ID, "status").text)
        assert contrast(style(browser, ".thumb.empty .muted", "color"), style(browser, ".thumb.empty", "backgroundColor")) >= 4.5
        note = browser.find_element(By.ID, browser.find_element(By.CSS_SELECTOR, ".score").get_attribute("aria-describedby"))
        assert note.is_displayed() and "from 0 to 1" in note.text

        browser.execute_script(  # every answer empty
            "const send = window.fetch; window.fetch = (url, options) => send(url, options).then((r) => r.json())"
            ".then((answer) => new Response(JSON.stringify({...answer, results: []})));"
        )
        no_results, status = browser.find_element(By.ID, "no-results"), browser.find_element(By.ID, "status")
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: status.text == "No listings, ranked by text")
        assert no_results.text == "No listing matches." and not note.is_displayed()
        browser.find_element(By.ID, "min-price").send_keys("5")
        browser.find_element(By.ID, "search").click()
        wait.until(lambda d: no_results.text == "No listing matches these filters.")
