"""The search page end to end in headless Chromium: upload a dataset photo, see the category and the listings.

Needs Debian's `chromium` and `chromium-driver` (CI installs them); skipped with the reason when absent.
"""
from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from listings.config import Config
from test_api_fakes import CLASSES, FakePredictor, fake_services, live_server, synthetic_photo, tiny_config

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


@contextmanager
def slow_search_sent(tmp_path: Path, browser) -> Iterator[WebDriverWait]:
    """The page of a server whose model takes a second, a search for "oak dining chair" on its way."""
    config = tiny_config(tmp_path / "artifacts")
    with live_server(config, fake_services(config, FakePredictor(delay_s=1.0))) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "text").send_keys("oak dining chair")
        browser.find_element(By.ID, "search").click()
        yield WebDriverWait(browser, 30)


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
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#category option")) == 1 + len(CLASSES))

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

        # a refused "More like this" (an empty price range) says so where the user is looking
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
        assert browser.switch_to.active_element.get_attribute("id") == "status"  # the button went with the results
        assert not browser.find_element(By.ID, "results-section").is_displayed()  # the earlier answer is gone


def test_the_last_search_asked_for_is_the_one_drawn(tmp_path, browser):
    """A slow search (the model busy) answering after the "More like this" clicked meanwhile does not
    replace its results; a price is typed as the catalogue writes it; focus follows the new results."""
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
        browser.find_element(By.ID, "search").click()  # slow: the model sleeps a second
        more.click()  # fast: no model runs
        wait.until(lambda d: title in d.find_element(By.ID, "results-heading").text)
        assert browser.switch_to.active_element.get_attribute("id") == "results-heading"
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
    drawn under the new description; a "More like this" the page refused left the search on its way
    to overwrite the refusal."""
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

        browser.find_element(By.ID, "search").click()  # on its way, then a "More like this" the page refuses
        browser.execute_script("document.getElementById('k').value = '0';")
        browser.find_elements(By.CSS_SELECTOR, ".more-like")[0].click()
        assert browser.execute_script(ABORTED)[-1] is True
        time.sleep(1.5)  # the search would have answered by now
        assert status.text == "Results: a whole number from 1 to 100."
