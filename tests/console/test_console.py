"""The web console in a real browser (docs/console.md): sign-in and
sign-out, a group from the TKE node template, adding, moving and editing a
rule, a conflicting save from a second session, the refusal to delete a
referenced group, findings (streamed, with their progress line) and a
reachability answer, isolation between accounts, a forged cross-site POST
refused; rule hits and last use after a hit report, the flows page over
records reported through ReportFlowRecords, switching an instance's
enforcement mode, and pagination over more than one page."""

import http.server
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from pathlib import Path

import pytest

try:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the `browsers` fixture skips (or fails) and says why
    By = WebDriverWait = WebDriverException = None

REPO = Path(__file__).resolve().parents[2]


def go(d, element):
    """Clicks a link or submit button and waits for the next page.

    While the old document is being torn down, chromedriver may answer a
    question about its element with a generic error ("Node with given id
    does not belong to the document") rather than a stale-element one:
    both mean the page has gone."""
    page = d.find_element(By.TAG_NAME, "html")
    element.click()

    def gone(_):
        try:
            page.is_enabled()
            return False
        except WebDriverException:  # StaleElementReferenceException included
            return True

    WebDriverWait(d, 15).until(gone)


def streamed(d):
    """Waits for a streamed page (findings, reachability, a preview) to
    end: its status line says "Done in ..." (or "Failed.")."""
    WebDriverWait(d, 30).until(lambda _: d.find_elements(By.ID, "done"))
    assert d.find_element(By.ID, "done").text.startswith("Done in"), text(d)


def sign_in(d, srv, creds):
    d.get(srv.url + "/console/signin")
    d.find_element(By.ID, "secret_id").send_keys(creds["SecretId"])
    d.find_element(By.ID, "secret_key").send_keys(creds["SecretKey"])
    go(d, d.find_element(By.ID, "signin"))
    assert d.current_url.endswith("/console/groups"), d.page_source[:2000]


def text(d):
    return d.find_element(By.TAG_NAME, "main").text


def create_group(d, srv, name, template="", cluster="", container=""):
    d.get(srv.url + "/console/groups")
    d.find_element(By.ID, "new-name").send_keys(name)
    if template:
        d.find_element(By.CSS_SELECTOR, f"#new-template option[value='{template}']").click()
        d.find_element(By.ID, "new-cluster").send_keys(cluster)
        d.find_element(By.ID, "new-container").send_keys(container)
    go(d, d.find_element(By.ID, "create-group"))
    assert "Created security group" in d.find_element(By.ID, "flash").text, text(d)
    return d.find_element(By.ID, "group-id").text


def rows(d, direction):
    return d.find_elements(By.CSS_SELECTOR, f"#{direction}-rules tbody tr")


def add_rule(d, direction, protocol, port, peer, description, action="ACCEPT", preview=False):
    form = d.find_element(By.ID, f"add-{direction}").find_element(By.XPATH, "ancestor::form")
    details = form.find_element(By.XPATH, "ancestor::details")
    if details.get_attribute("open") is None:
        details.find_element(By.TAG_NAME, "summary").click()
    for field, value in (("protocol", protocol), ("port", port), ("peer", peer),
                         ("description", description)):
        el = d.find_element(By.ID, f"add-{direction}-{field}")
        el.clear()
        el.send_keys(value)
    d.find_element(By.ID, f"add-{direction}-action").send_keys(action)
    if preview:
        go(d, form.find_element(By.CSS_SELECTOR, "button[value='preview']"))
        streamed(d)
    else:
        go(d, d.find_element(By.ID, f"add-{direction}"))


def test_sign_in_and_sign_out(console_server, browsers):
    d = browsers()
    d.get(console_server.url + "/console/groups")
    assert d.current_url.endswith("/console/signin")
    # A wrong key is refused.
    creds = console_server.admin()
    d.find_element(By.ID, "secret_id").send_keys(creds["SecretId"])
    d.find_element(By.ID, "secret_key").send_keys("wrong" + creds["SecretKey"])
    go(d, d.find_element(By.ID, "signin"))
    assert "Wrong SecretId or SecretKey" in d.find_element(By.ID, "error").text
    sign_in(d, console_server, creds)
    assert d.find_element(By.ID, "account").text == "admin"
    cookie = d.get_cookie("palisade_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    go(d, d.find_element(By.ID, "signout"))
    assert d.current_url.endswith("/console/signin")
    assert d.get_cookie("palisade_session") is None
    d.get(console_server.url + "/console/groups")
    assert d.current_url.endswith("/console/signin")


def test_tke_template_then_add_move_and_edit_a_rule(console_server, browsers):
    d = browsers()
    sign_in(d, console_server, console_server.admin())
    sg = create_group(d, console_server, "tke-nodes", "tke-node", "10.0.0.0/16", "172.16.0.0/16")
    ingress = [r.text for r in rows(d, "ingress")]
    assert any("172.16.0.0/16" in r for r in ingress), ingress
    assert any("30000-32768" in r for r in ingress), ingress
    n = len(ingress)

    add_rule(d, "ingress", "TCP", "8080", "198.51.100.0/24", "web from the partner")
    assert "Saved: Add ingress rule" in d.find_element(By.ID, "flash").text, text(d)
    assert "8080" in rows(d, "ingress")[n].text

    # Move it up one place.
    go(d, d.find_element(By.CSS_SELECTOR, f"button[aria-label='Move ingress rule {n} up']"))
    assert "Saved: Move ingress rule" in d.find_element(By.ID, "flash").text, text(d)
    assert "8080" in rows(d, "ingress")[n - 1].text
    # And to the top, by index.
    d.find_element(By.ID, f"ingress-to-{n - 1}").send_keys("0")
    go(d, d.find_element(By.CSS_SELECTOR, f"button[aria-label='Move ingress rule {n - 1} to the index given']"))
    assert "8080" in rows(d, "ingress")[0].text, text(d)

    # Edit it: preview first, then save.
    go(d, d.find_element(By.CSS_SELECTOR, "a[aria-label='Edit ingress rule 0']"))
    port = d.find_element(By.ID, "edit-port")
    assert port.get_attribute("value") == "8080"
    port.clear()
    port.send_keys("8081")
    go(d, d.find_element(By.CSS_SELECTOR, "button[value='preview']"))
    streamed(d)
    assert "replace ingress rule 0" in d.find_element(By.ID, "change").text
    d.find_element(By.ID, "effect")
    go(d, d.find_element(By.ID, "confirm"))
    assert "Saved: Replace ingress rule 0" in d.find_element(By.ID, "flash").text, text(d)
    first = rows(d, "ingress")[0].text
    assert "8081" in first and "198.51.100.0/24" in first
    assert d.current_url.endswith(f"/console/groups/{sg}")


def test_a_conflicting_save_from_a_second_session(console_server, browsers):
    a, b = browsers(), browsers()
    creds = console_server.admin()
    sign_in(a, console_server, creds)
    sign_in(b, console_server, creds)
    sg = create_group(a, console_server, "conflicts")
    add_rule(a, "ingress", "TCP", "22", "192.0.2.0/24", "ssh")
    # A opens the edit form of rule 0 at this version.
    a.get(f"{console_server.url}/console/groups/{sg}/rule?dir=ingress&index=0")
    seen = a.find_element(By.CSS_SELECTOR, "input[name='version']").get_attribute("value")
    # B changes the group meanwhile.
    b.get(f"{console_server.url}/console/groups/{sg}")
    add_rule(b, "ingress", "TCP", "443", "0.0.0.0/0", "https")
    assert "Saved" in b.find_element(By.ID, "flash").text
    # A's save is refused with a clear conflict, and nothing of B's is lost.
    port = a.find_element(By.ID, "edit-port")
    port.clear()
    port.send_keys("2222")
    go(a, a.find_element(By.ID, "save-rule"))
    error = a.find_element(By.ID, "error").text
    assert "Conflict" in error and "Nothing was saved" in error, error
    assert f"you saw version {seen}" in error
    current = [r.text for r in rows(a, "ingress")]
    assert "22" in current[0] and "2222" not in current[0]
    assert any("443" in r for r in current)


def test_deleting_a_referenced_group_is_refused(console_server, browsers):
    d = browsers()
    sign_in(d, console_server, console_server.admin())
    target = create_group(d, console_server, "db")
    user = create_group(d, console_server, "app")
    add_rule(d, "egress", "TCP", "5432", target, "to the database")
    assert "Saved" in d.find_element(By.ID, "flash").text, text(d)
    d.get(f"{console_server.url}/console/groups/{target}")
    assert user in d.find_element(By.ID, "referrers").text
    go(d, d.find_element(By.ID, "delete-group"))
    error = d.find_element(By.ID, "error").text
    assert "Not deleted" in error and f"referenced by the rules of {user}" in error, error
    d.get(f"{console_server.url}/console/groups?q={target}")
    assert target in d.find_element(By.ID, "groups").text


def test_findings_and_a_reachability_answer(console_server, browsers):
    creds = console_server.account("fleet-" + str(time.time_ns())[-6:])
    console_server.apply(creds, REPO / "examples" / "tke-cluster.yaml")
    d = browsers()
    sign_in(d, console_server, creds)
    d.get(console_server.url + "/console/findings")
    # A streamed page: its status line ends as "Done in ... s.".
    assert d.find_element(By.ID, "done").text.startswith("Done in"), text(d)
    assert d.find_element(By.ID, "progress").get_attribute("role") == "status"
    sections = d.find_elements(By.CSS_SELECTOR, "section.finding")
    assert sections, text(d)
    assert "witness" not in d.find_element(By.ID, "counts").text
    assert any("ingress TCP" in s.text for s in sections), text(d)
    d.get(console_server.url + "/console/reach")
    d.find_element(By.ID, "from").send_keys("198.51.100.7")
    d.find_element(By.ID, "to").send_keys("ins-node0001")
    d.find_element(By.ID, "protocol").send_keys("tcp")
    d.find_element(By.ID, "port").send_keys("30080")
    go(d, d.find_element(By.ID, "ask"))
    # The answer is streamed after the form; its status line ends "Done".
    streamed(d)
    verdict = d.find_element(By.ID, "verdict").text
    assert "reachable" in verdict and "NOT" not in verdict, text(d)
    answer = d.find_element(By.ID, "answer").text
    assert "Destination ingress" in answer and "ACCEPT by" in answer and "30000-32768" in answer, answer
    # A change's preview on a group bound to instances: what it opens, where.
    d.get(console_server.url + "/console/groups?q=ops")
    go(d, d.find_element(By.LINK_TEXT, "ops"))
    version = d.find_element(By.ID, "version").text
    add_rule(d, "ingress", "TCP", "8443", "0.0.0.0/0", "tls", preview=True)
    effect = d.find_element(By.ID, "effect").text
    assert "+ opens" in effect and "ins-node0001" in effect and "8443" in effect, effect
    # The place of the observed connections a change would break says it is not computed.
    assert "Not computed yet" in d.find_element(By.ID, "observed-impact").text
    # The preview changed nothing.
    d.back()
    d.get(console_server.url + "/console/groups?q=ops")
    go(d, d.find_element(By.LINK_TEXT, "ops"))
    assert d.find_element(By.ID, "version").text == version
    # And one that is not reachable: telnet is dropped by the ops group.
    d.get(console_server.url + "/console/reach?from=198.51.100.7&to=ins-node0001&protocol=tcp&port=23")
    assert "NOT reachable" in d.find_element(By.ID, "verdict").text
    assert "DROP by" in d.find_element(By.ID, "answer").text


def test_a_second_account_sees_none_of_the_first_ones_groups(console_server, browsers):
    a = browsers()
    sign_in(a, console_server, console_server.admin())
    sg = create_group(a, console_server, "admins-only")
    creds = console_server.account("other-" + str(time.time_ns())[-6:])
    b = browsers()
    sign_in(b, console_server, creds)
    assert "No security groups." in b.find_element(By.ID, "groups").text
    b.get(f"{console_server.url}/console/groups?q={sg}")
    assert "No security groups." in b.find_element(By.ID, "groups").text
    b.get(f"{console_server.url}/console/groups/{sg}")
    assert "does not exist in this account" in b.find_element(By.ID, "error").text
    b.get(f"{console_server.url}/console/findings")
    b.get(f"{console_server.url}/console/groups")


class _Attacker(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):  # noqa: N802
        page = f"""<!DOCTYPE html><html><body><h1>Win a prize</h1>
<form id="f" method="post" action="{self.target}/console/groups/create">
<input name="name" value="forged"><input name="description" value="x">
<input name="csrf" value="guess"></form>
<script>document.getElementById('f').submit();</script></body></html>"""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *args):
        pass


def test_a_forged_cross_site_post_is_refused(console_server, browsers):
    d = browsers()
    sign_in(d, console_server, console_server.admin())
    handler = type("Attacker", (_Attacker,), {"target": console_server.url})
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        # Another site (localhost is not 127.0.0.1) posts a form to the console.
        d.get(f"http://localhost:{evil.server_address[1]}/")
        deadline = time.time() + 10
        while "/console/" not in d.current_url and time.time() < deadline:
            time.sleep(0.1)
        assert "/console/groups/create" in d.current_url
        assert "nothing was changed" in d.find_element(By.ID, "error").text
    finally:
        evil.shutdown()
    d.get(console_server.url + "/console/groups?q=forged")
    assert "No security groups." in d.find_element(By.ID, "groups").text

    # The session's own cookie without the form's token is refused too.
    cookie = d.get_cookie("palisade_session")["value"]
    req = urllib.request.Request(
        console_server.url + "/console/groups/create",
        data=urllib.parse.urlencode({"name": "forged", "description": ""}).encode(),
        headers={"Cookie": f"palisade_session={cookie}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403
    # And so is a token sent from another origin.
    d.get(console_server.url + "/console/groups")
    token = d.find_element(By.CSS_SELECTOR, "input[name='csrf']").get_attribute("value")
    req = urllib.request.Request(
        console_server.url + "/console/groups/create",
        data=urllib.parse.urlencode({"name": "forged", "description": "", "csrf": token}).encode(),
        headers={"Cookie": f"palisade_session={cookie}", "Origin": "http://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403
    d.get(console_server.url + "/console/groups?q=forged")
    assert "No security groups." in d.find_element(By.ID, "groups").text


def test_labels_keyboard_and_a_narrow_window(console_server, browsers):
    d = browsers()
    sign_in(d, console_server, console_server.admin())
    sg = create_group(d, console_server, "usable", "basic")
    for path in ("/console/groups", f"/console/groups/{sg}", "/console/templates",
                 "/console/instances", "/console/reach", "/console/flows"):
        d.get(console_server.url + path)
        # Every visible control has a label (or an aria-label).
        for el in d.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), select"):
            id_ = el.get_attribute("id")
            assert id_ and d.find_elements(By.CSS_SELECTOR, f"label[for='{id_}']"), (path, el.get_attribute("name"))
        for b in d.find_elements(By.TAG_NAME, "button"):
            assert b.get_attribute("textContent").strip() or b.get_attribute("aria-label"), path
    # The keyboard reaches the skip link first, then the navigation.
    d.get(console_server.url + "/console/groups")
    from selenium.webdriver.common.keys import Keys
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert d.switch_to.active_element.text == "Skip to content"
    d.switch_to.active_element.send_keys(Keys.TAB)
    assert d.switch_to.active_element.text == "Security groups"
    # A narrow window: the page itself does not scroll sideways.
    d.set_window_size(420, 800)
    d.get(f"{console_server.url}/console/groups/{sg}")
    width = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width


def test_instances_reorder_unbind_bind_and_templates(console_server, browsers):
    creds = console_server.account("ins-" + str(time.time_ns())[-6:])
    console_server.apply(creds, REPO / "examples" / "tke-cluster.yaml")
    d = browsers()
    sign_in(d, console_server, creds)
    d.get(console_server.url + "/console/instances")
    listed = d.find_element(By.ID, "instances").text
    assert "ins-node0001" in listed and "ins-node0002" in listed
    go(d, d.find_element(By.LINK_TEXT, "ins-node0001"))

    def order():
        return [r.find_elements(By.TAG_NAME, "td")[1].text
                for r in d.find_elements(By.CSS_SELECTOR, "#bound-groups tbody tr")]

    first, second = order()
    go(d, d.find_element(By.CSS_SELECTOR, f"button[aria-label='Down {first}']"))
    assert "Saved the groups" in d.find_element(By.ID, "flash").text
    assert order() == [second, first]
    go(d, d.find_element(By.CSS_SELECTOR, f"button[aria-label='Unbind {second}']"))
    assert order() == [first]
    d.find_element(By.ID, "bind-group").send_keys(second)
    go(d, d.find_element(By.XPATH, "//button[starts-with(., 'Bind')]"))
    assert order() == [first, second]
    # A form read before a change made elsewhere is refused as a conflict.
    stale = d.current_url
    other = browsers()
    sign_in(other, console_server, creds)
    other.get(stale)
    go(other, other.find_element(By.CSS_SELECTOR, f"button[aria-label='Down {first}']"))
    go(d, d.find_element(By.CSS_SELECTOR, f"button[aria-label='Unbind {second}']"))
    assert "Conflict" in d.find_element(By.ID, "error").text
    assert order() == [second, first]

    d.get(console_server.url + "/console/templates")
    assert "ipm-" in d.find_element(By.ID, "address-table").text
    details = d.find_element(By.ID, "service-name").find_element(By.XPATH, "ancestor::details")
    details.find_element(By.TAG_NAME, "summary").click()
    d.find_element(By.ID, "service-name").send_keys("web")
    d.find_element(By.ID, "service-entries").send_keys("tcp:80, tcp:443")
    go(d, details.find_element(By.TAG_NAME, "button"))
    table = d.find_element(By.ID, "service-table").text
    assert "web" in table and "tcp:80" in table, table
    row = d.find_element(By.XPATH, "//table[@id='service-table']//tr[td[1]='web']")
    go(d, row.find_element(By.TAG_NAME, "button"))
    assert "Deleted" in d.find_element(By.ID, "flash").text
    assert "web" not in d.find_element(By.ID, "service-table").text


def fleet_account(srv, prefix):
    """A new account holding examples/tke-cluster.yaml; its credentials and
    the id of its group `tke-node`."""
    creds = srv.account(prefix + "-" + str(time.time_ns())[-6:])
    srv.apply(creds, REPO / "examples" / "tke-cluster.yaml")
    found = srv.call(creds, "vpc", "DescribeSecurityGroups",
                     {"Filters": [{"Name": "security-group-name", "Values": ["tke-node"]}]})
    return creds, found["SecurityGroupSet"][0]["SecurityGroupId"]


def cells(row, css):
    return row.find_element(By.CSS_SELECTOR, css).text


def test_rule_hits_and_last_use_after_a_hit_report(console_server, browsers):
    creds, sg = fleet_account(console_server, "hits")
    # Both nodes' agents report their kernel counters (ReportInstanceStatus,
    # the call an agent makes): rule 2 (NodePorts over TCP) decided 7 + 5.
    before = int(time.time())
    for ins, packets in (("ins-node0001", 7), ("ins-node0002", 5)):
        console_server.call(creds, "palisade", "ReportInstanceStatus", {
            "InstanceId": ins, "AppliedRevision": 1,
            "Counters": [{"SecurityGroupId": sg, "Direction": "ingress", "PolicyIndex": 2,
                          "Packets": packets, "Bytes": packets * 60}]})
    d = browsers()
    sign_in(d, console_server, creds)
    d.get(f"{console_server.url}/console/groups/{sg}")
    ingress = rows(d, "ingress")
    assert "30000-32768" in ingress[2].text
    assert cells(ingress[2], "td.hits") == "12", ingress[2].text
    last = cells(ingress[2], "td.last-used")
    assert last.endswith(" UTC") and last[:4] == time.strftime("%Y", time.gmtime(before)), last
    assert cells(ingress[0], "td.hits") == "0" and cells(ingress[0], "td.last-used") == "never"
    # A counter that grew since the last report adds what it grew by.
    console_server.call(creds, "palisade", "ReportInstanceStatus", {
        "InstanceId": "ins-node0001", "AppliedRevision": 1,
        "Counters": [{"SecurityGroupId": sg, "Direction": "ingress", "PolicyIndex": 2,
                      "Packets": 10, "Bytes": 600}]})
    d.refresh()
    assert cells(rows(d, "ingress")[2], "td.hits") == "15"
    # The hits link to the rule's flow records, the filters filled in.
    go(d, rows(d, "ingress")[2].find_element(By.CSS_SELECTOR, "td.hits a"))
    assert "/console/flows" in d.current_url
    assert d.find_element(By.ID, "flow-group").get_attribute("value") == sg
    assert d.find_element(By.ID, "flow-index").get_attribute("value") == "2"
    d.back()
    assert cells(rows(d, "ingress")[2], "td.hits") == "15"


def flow_records(sg, now, n):
    """`n` records of ins-node0001, newest first: odd ones dropped by the
    default drop on port 22, even ones accepted by tke-node's rule 2."""
    out = []
    for i in range(n):
        r = {"InstanceId": "ins-node0001", "Direction": "ingress", "SrcAddr": f"198.51.100.{i}",
             "DstAddr": "10.0.0.11", "SrcPort": 40000 + i, "Protocol": 6, "Decisions": 1,
             "Start": now - i, "End": now - i}
        if i % 2:
            r.update(DstPort=22, Action="DROP")
        else:
            r.update(DstPort=30080, Action="ACCEPT",
                     Rule={"SecurityGroupId": sg, "PolicyIndex": 2, "Revision": 1})
        out.append(r)
    return out


def test_flows_page_filters_and_pages(console_server, browsers):
    from selenium.webdriver.common.keys import Keys

    creds, sg = fleet_account(console_server, "flows")
    stored = console_server.call(creds, "palisade", "ReportFlowRecords", {
        "InstanceId": "ins-node0001", "FlowRecords": flow_records(sg, int(time.time()), 60)})
    assert stored["Stored"] == 60
    d = browsers()
    sign_in(d, console_server, creds)
    d.get(console_server.url + "/console/flows")
    assert d.find_element(By.ID, "flow-since").get_attribute("value") == "1h"
    table = d.find_elements(By.CSS_SELECTOR, "#flows tbody tr")
    assert len(table) == 50
    assert "198.51.100.0:40000" in table[0].text and "ACCEPT" in table[0].text, table[0].text
    assert "default drop" in table[1].text and "DROP" in table[1].text
    assert d.find_element(By.ID, "page-at").text == "Page 1 of 2 (60 in all)"
    # The keyboard follows the pager's links.
    nxt = d.find_element(By.CSS_SELECTOR, "a[rel='next']")
    assert nxt.get_attribute("aria-label") == "Next page of flow records"
    page = d.find_element(By.TAG_NAME, "html")
    nxt.send_keys(Keys.ENTER)
    WebDriverWait(d, 15).until(lambda _: "page=2" in d.current_url)
    assert d.find_element(By.ID, "page-at").text == "Page 2 of 2 (60 in all)", text(d)
    assert len(d.find_elements(By.CSS_SELECTOR, "#flows tbody tr")) == 10
    assert "198.51.100.59" in d.find_elements(By.CSS_SELECTOR, "#flows tbody tr")[-1].text
    # And the labelled "Go to page" field.
    goto = d.find_element(By.ID, "page-goto")
    assert d.find_element(By.CSS_SELECTOR, "label[for='page-goto']").text == "Go to page"
    goto.clear()
    goto.send_keys("1", Keys.ENTER)
    WebDriverWait(d, 15).until(lambda _: "page=1" in d.current_url)
    assert d.find_element(By.ID, "page-at").text.startswith("Page 1 of 2")
    del page
    # By the deciding rule, over every record kept; and filters nothing matches.
    d.get(f"{console_server.url}/console/flows?group={sg}&index=2&since=")
    assert d.find_element(By.ID, "page-at").text == "Page 1 of 1 (30 in all)", text(d)
    d.get(console_server.url + "/console/flows?protocol=udp")
    assert "No flow records match" in d.find_element(By.ID, "flows").text
    d.get(console_server.url + "/console/flows?protocol=nope")
    assert "nope" in d.find_element(By.ID, "error").text
    # Filters: dropped, on port 22, from 198.51.100.0/28 (records 1, 3, ..., 15).
    d.get(console_server.url + "/console/flows")
    d.find_element(By.CSS_SELECTOR, "#flow-verdict option[value='DROP']").click()
    d.find_element(By.ID, "flow-port").send_keys("22")
    d.find_element(By.ID, "flow-peer").send_keys("198.51.100.0/28")
    d.find_element(By.ID, "flow-protocol").send_keys("tcp")
    go(d, d.find_element(By.ID, "filter-flows"))
    got = d.find_elements(By.CSS_SELECTOR, "#flows tbody tr")
    assert len(got) == 8, text(d)
    assert all(r.find_element(By.CSS_SELECTOR, "td.verdict").text == "DROP" for r in got)
    assert d.find_element(By.ID, "page-at").text == "Page 1 of 1 (8 in all)"
    # Another account sees none of them.
    other = browsers()
    sign_in(other, console_server, console_server.account("noflows-" + str(time.time_ns())[-6:]))
    other.get(console_server.url + "/console/flows?since=")
    assert "No flow records match" in other.find_element(By.ID, "flows").text


def test_switching_an_instance_between_enforce_and_audit(console_server, browsers):
    creds, _ = fleet_account(console_server, "audit")
    d = browsers()
    sign_in(d, console_server, creds)
    d.get(console_server.url + "/console/instances/ins-node0001")
    assert d.find_element(By.ID, "enforcement").text == "ENFORCE"
    button = d.find_element(By.ID, "switch-enforcement")
    assert button.text == "Switch to AUDIT"
    go(d, button)
    assert "now AUDIT" in d.find_element(By.ID, "flash").text, text(d)
    assert d.find_element(By.ID, "enforcement").text == "AUDIT"
    status = console_server.call(creds, "palisade", "DescribeInstanceStatus", {"InstanceIds": ["ins-node0001"]})
    assert status["InstanceStatusSet"][0]["Enforcement"] == "AUDIT"
    d.get(console_server.url + "/console/instances")
    row = d.find_element(By.XPATH, "//table[@id='instances']//tr[td/a='ins-node0001']")
    assert "AUDIT" in row.text
    other = d.find_element(By.XPATH, "//table[@id='instances']//tr[td/a='ins-node0002']")
    assert "ENFORCE" in other.text
    # A form read before a change made elsewhere is refused as a conflict.
    d.get(console_server.url + "/console/instances/ins-node0001")
    console_server.call(creds, "palisade", "ModifyInstanceEnforcement",
                        {"InstanceId": "ins-node0001", "Enforcement": "ENFORCE"})
    go(d, d.find_element(By.ID, "switch-enforcement"))
    assert "Conflict" in d.find_element(By.ID, "error").text
    assert d.find_element(By.ID, "enforcement").text == "ENFORCE"
    go(d, d.find_element(By.ID, "switch-enforcement"))
    assert d.find_element(By.ID, "enforcement").text == "AUDIT"
    go(d, d.find_element(By.ID, "switch-enforcement"))
    assert d.find_element(By.ID, "enforcement").text == "ENFORCE"
    status = console_server.call(creds, "palisade", "DescribeInstanceStatus", {"InstanceIds": ["ins-node0001"]})
    assert status["InstanceStatusSet"][0]["Enforcement"] == "ENFORCE"


def test_the_groups_list_over_two_pages(console_server, browsers):
    from selenium.webdriver.common.keys import Keys

    creds = console_server.account("many-" + str(time.time_ns())[-6:])
    # 55 groups (at most 50 per project: two projects).
    for n in range(55):
        console_server.call(creds, "vpc", "CreateSecurityGroup", {
            "GroupName": f"many-{n:02}", "GroupDescription": "", "ProjectId": str(n % 2 + 1)})
    d = browsers()
    sign_in(d, console_server, creds)
    assert len(d.find_elements(By.CSS_SELECTOR, "#groups tbody tr")) == 50
    assert d.find_element(By.ID, "page-at").text == "Page 1 of 2 (55 in all)"
    assert d.find_element(By.CSS_SELECTOR, "nav.pager").get_attribute("aria-label") == "Pages of security groups"
    last = d.find_element(By.LINK_TEXT, "Last")
    last.send_keys(Keys.ENTER)
    WebDriverWait(d, 15).until(lambda _: "page=2" in d.current_url)
    assert len(d.find_elements(By.CSS_SELECTOR, "#groups tbody tr")) == 5
    assert d.find_element(By.ID, "page-at").text == "Page 2 of 2 (55 in all)"
    go(d, d.find_element(By.CSS_SELECTOR, "a[rel='prev']"))
    assert d.find_element(By.ID, "page-at").text.startswith("Page 1 of 2")
    # A search keeps to its matches, over the pages too.
    d.get(console_server.url + "/console/groups?q=many-5")
    names = [r.find_element(By.TAG_NAME, "td").text for r in d.find_elements(By.CSS_SELECTOR, "#groups tbody tr")]
    assert sorted(names) == [f"many-{n}" for n in range(50, 55)], names
