"""The console's HTML pages. Every value is escaped; chat content is put into the page
by the browser as text (``textContent``), never as markup."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from review_console.auth import Session
from review_console.queue import Filters, Item

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:1.5em;align-items:center;padding:.6em 1.2em;background:#1d2330;color:#fff}
header a{color:#cfe0ff;text-decoration:none} header form{margin-left:auto}
main{max-width:980px;margin:1.2em auto;padding:0 1em}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{padding:.35em .6em;border-bottom:1px solid #e3e6eb;text-align:left;font-size:14px}
.turn{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:.6em .9em;margin:.4em 0;
white-space:pre-wrap;word-break:break-word}
.judged{border-color:#c0392b;border-width:2px}
.role{font-size:12px;color:#67708a;text-transform:uppercase}
.keys kbd{border:1px solid #aab;border-radius:3px;padding:0 .3em;background:#fff}
.cat{display:inline-block;margin:.2em .4em .2em 0;padding:.2em .5em;border:1px solid #aab;
border-radius:4px;background:#fff;cursor:pointer}
.cat.on{background:#c0392b;color:#fff;border-color:#c0392b}
.label{font-weight:600;padding:.2em .6em;border-radius:4px;border:1px solid #aab;background:#fff}
.label.on{background:#1d2330;color:#fff}
#status{min-height:1.4em;color:#67708a}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _frame(title: str, body: str, session: Session | None = None, csrf: bool = False) -> str:
    nav = ""
    if session is not None:
        nav = (
            '<a href="/">Queue</a><a href="/review">Review</a><a href="/stats">Stats</a>'
            f'<span>signed in as <b id="me">{_e(session.reviewer)}</b></span>'
            '<form method="post" action="/logout" id="logout">'
            '<button type="submit">Sign out</button></form>'
        )
    meta = f'<meta name="csrf" content="{_e(session.csrf)}">' if csrf and session else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)} · guardstream review</title>{meta}<style>{STYLE}</style></head>"
        f"<body><header><b>guardstream review</b>{nav}</header><main>{body}</main>"
        + (LOGOUT_JS if session is not None else "")
        + "</body></html>"
    )


# Sign-out is a POST with the CSRF token in a header, like every other change.
LOGOUT_JS = """<script>
document.getElementById('logout').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const meta = document.querySelector('meta[name=csrf]');
  await fetch('/logout', {method: 'POST', headers: {'x-csrf-token': meta ? meta.content : ''}});
  location.href = '/login';
});
</script>"""


def message(text: str) -> str:
    return _frame("guardstream review", f"<p>{_e(text)}</p>")


def login(error: str | None) -> str:
    err = f'<p role="alert" style="color:#c0392b">{_e(error)}</p>' if error else ""
    return _frame(
        "Sign in",
        f"<h1>Sign in</h1>{err}"
        '<form method="post" action="/login">'
        '<p><label>Reviewer <input name="reviewer" autocomplete="username" autofocus></label></p>'
        '<p><label>Password <input name="password" type="password"'
        ' autocomplete="current-password"></label></p>'
        '<p><button type="submit">Sign in</button></p></form>',
    )


def queue(
    session: Session,
    items: Sequence[Item],
    filters: Filters,
    order: str,
    now: float,
    query: str,
) -> str:
    rows = "".join(
        "<tr>"
        f'<td><a href="/review?item={_e(quote(i.flagged_id, safe=""))}">'
        f"{_e(i.flagged_id[:12])}</a></td>"
        f"<td>{_e(i.tenant or '-')}</td><td>{_e(', '.join(i.reasons))}</td>"
        f"<td>{_e(', '.join(i.categories) or '-')}</td><td>{i.p_unsafe:.2f}</td>"
        f"<td>{_e(i.model_version)}</td><td>{_age(now - i.flagged_at)}</td></tr>"
        for i in items[:200]
    )

    def field(name: str, value: str | None) -> str:
        return f'<label>{name} <input name="{name}" value="{_e(value or "")}" size="10"></label> '

    form = (
        '<form method="get" action="/">'
        + field("tenant", filters.tenant)
        + field("category", filters.category)
        + field("reason", filters.reason)
        + field("model_version", filters.model_version)
        + '<label>order <select name="order">'
        + "".join(
            f'<option value="{o}"{" selected" if o == order else ""}>{o}</option>'
            for o in ("oldest", "risk")
        )
        + "</select></label> <button>Filter</button></form>"
    )
    start = f"/review?{_e(query)}" if query else "/review"
    body = (
        f"<h1>Queue <small>({len(items)} open for you)</small></h1>{form}"
        f'<p><a id="start" href="{start}">Start reviewing</a> (or press <kbd>Enter</kbd>)</p>'
        "<table><thead><tr><th>item</th><th>tenant</th><th>reasons</th><th>categories</th>"
        f"<th>p_unsafe</th><th>model</th><th>age</th></tr></thead><tbody>{rows}</tbody></table>"
        "<script>document.addEventListener('keydown', (e) => {"
        " if (e.key === 'Enter' && !(e.target instanceof HTMLInputElement))"
        " document.getElementById('start').click(); });</script>"
    )
    return _frame("Queue", body, session, csrf=True)


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def review(session: Session, query: str) -> str:
    # "<" escaped: a query holding "</script>" cannot end the script.
    query_js = json.dumps(query).replace("<", "\\u003c")
    body = (
        '<div id="item"><p>Loading...</p></div>'
        '<p id="status" role="status"></p>'
        '<p class="keys"><kbd>1</kbd> safe · <kbd>2</kbd> unsafe · category keys as shown'
        " · <kbd>N</kbd> note · <kbd>Enter</kbd> submit · <kbd>S</kbd> skip"
        " · <kbd>U</kbd> undo</p>"
        f"<script>const QUERY = {query_js};</script>"
        f"{REVIEW_JS}"
    )
    return _frame("Review", body, session, csrf=True)


def stats(session: Session, s: dict[str, Any]) -> str:
    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    kappa = "".join(f"<tr><td>{_e(k)}</td><td>{num(v)}</td></tr>" for k, v in s["kappa"].items())
    people = "".join(
        f"<tr><td>{_e(r['reviewer'])}</td><td>{r['reviews']}</td><td>{num(r['per_hour'])}</td></tr>"
        for r in s["reviewers"]
    )
    body = (
        "<h1>Agreement and throughput</h1>"
        f"<p>Items judged by two or more reviewers: <b>{s['items_with_overlap']}</b>;"
        f" Krippendorff's alpha (nominal): <b id=alpha>{num(s['alpha'])}</b></p>"
        "<h2>Cohen's kappa, per pair</h2><table><tr><th>pair</th><th>kappa</th></tr>"
        f"{kappa}</table><h2>Reviewers</h2><table><tr><th>reviewer</th><th>reviews</th>"
        f"<th>per hour</th></tr>{people}</table>"
    )
    return _frame("Stats", body, session, csrf=True)


# The review page's script: one item at a time, the keyboard first.
REVIEW_JS = (
    "<script>" + (files("review_console") / "review.js").read_text(encoding="utf-8") + "</script>"
)
