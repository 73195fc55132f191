"""Troubleshooting lines built from the credential plugins' own output.

The plugins lay their text out as ``Key : value`` lines (from their source):

* 104410 "Target Credential Status by Authentication Protocol - Failure for Provided
  Credentials": ``Protocol : SSH`` / ``Port : 22`` / ``Failure details :`` then per user
  ``- User : bob`` and per issue ``- Plugin : ...`` / ``Plugin ID`` / ``Plugin Name`` /
  ``Message :`` (the message may continue on the next lines).
* 21745 "OS Security Patch Assessment Failed" (old name "Authentication Failure - Local
  Checks Not Run"): the same ``- Plugin`` / ``Protocol`` / ``Message`` blocks; old versions
  write ``- It was not possible to log into the remote host via ssh (invalid credentials).``
* 110385 "... Insufficient Privilege": ``Protocol`` / ``Port`` / ``User`` (or "protocol as
  USER.") and ``Plugin N:  Permission was denied while ...`` lines.
* 117886 "OS Security Patch Assessment Not Available": ``- Plugin`` / ``Message`` blocks.
* 24786 "Nessus Windows Scan Not Performed with Admin Privileges" and 26917 "Nessus Cannot
  Access the Windows Registry": free text.

Every sentence quotes the plugin's message; a hint is added only when the message says what
went wrong (authentication, reachability, privilege).
"""

from __future__ import annotations

import re

import msgspec

_KEYS = {
    "protocol",
    "port",
    "user",
    "plugin",
    "plugin id",
    "plugin name",
    "message",
    "failure details",
    "database",
    "credential type",
}
#: the part of a "- Key : value" line before its first colon, trailing whitespace stripped
_KEY_PART = re.compile(r"-?\s*([A-Za-z][A-Za-z ]*)")
_PROBLEM = re.compile(r"^Plugin\s+(\S+?):\s+(.*)$")


class CredentialIssue(msgspec.Struct, kw_only=True):
    """One issue reported by a credential plugin."""

    protocol: str | None = None
    port: str | None = None
    user: str | None = None
    plugin: str | None = None
    message: str = ""


def key_value(line: str) -> tuple[str, str] | None:
    """``("key", "value")`` of a ``- Key : value`` line (key lowercased, value stripped of
    whitespace), or None. Split at the first colon in Python: the regular expression
    that did it backtracked quadratically on a long run of blanks (8,000 took 94 ms, holding
    the GIL; a scanner writes these outputs)."""
    head, colon, rest = line.partition(":")
    m = _KEY_PART.fullmatch(head.rstrip()) if colon else None
    if m is None:
        return None
    return m.group(1).strip().lower(), rest.strip()


def parse_issue_blocks(text: str | None) -> list[CredentialIssue]:
    """``Protocol`` / ``Port`` / ``User`` / ``Plugin`` / ``Message`` blocks of 104410, 21745,
    117886 and 110385 outputs. Context (protocol, port, user) carries over to later issues."""
    if not text:
        return []
    issues: list[CredentialIssue] = []
    ctx: dict[str, str | None] = {"protocol": None, "port": None, "user": None, "plugin": None}
    current: CredentialIssue | None = None
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        kv = key_value(line)
        if kv is not None and kv[0] in _KEYS:
            key, value = kv[0], kv[1].strip("'")
            if key == "message":
                current = CredentialIssue(
                    protocol=ctx["protocol"],
                    port=ctx["port"],
                    user=ctx["user"],
                    plugin=ctx["plugin"],
                    message=value,
                )
                issues.append(current)
                continue
            current = None
            if key in ("protocol", "database"):
                ctx["protocol"] = value or None
            elif key in ("port", "user"):
                ctx[key] = value or None
            elif key in ("plugin name", "plugin"):
                ctx["plugin"] = value or ctx["plugin"]
        elif kv is not None and not kv[1]:
            current = None  # a section header such as "The following ... were logged :"
        elif current is not None and line:
            current.message = f"{current.message} {line}".strip()
    if not issues and ctx["user"] is not None:
        # 141118/110385 style: a credential description without a message
        issues.append(CredentialIssue(protocol=ctx["protocol"], port=ctx["port"], user=ctx["user"]))
    return issues


def hint(protocol: str | None, port: str | None, user: str | None, message: str) -> str | None:
    """A next step keyed on what the plugin's message says, or None."""
    msg = message.lower()
    who = f"'{user}'" if user else "the scan account"
    proto = (protocol or "").lower()
    if any(w in msg for w in ("timed out", "timeout", "unreachable", "port closed", "refused")):
        where = f"port {port}" if port else "the service port"
        return f"Check that the scanner can reach {where} on the host (firewall, service up)."
    if any(w in msg for w in ("privilege", "sudo", "escalat", "permission denied while")):
        return f"Grant {who} the needed rights or fix its privilege escalation (sudo/su) settings."
    if any(w in msg for w in ("authenticat", "password", "logon failure", "access denied")):
        if proto == "ssh":
            return (
                f"Check the password or key for {who} and that sshd allows that "
                "authentication method."
            )
        if proto == "smb":
            return f"Check the password and domain for {who} and that it may log on over SMB."
        return f"Check the credentials supplied for {who}."
    return None


def _sentence(host: str, issue: CredentialIssue, what: str) -> str:
    proto = (issue.protocol or "").upper() or "Credentialed"
    user = f" as '{issue.user}'" if issue.user else ""
    port = f" on port {issue.port}" if issue.port else ""
    msg = issue.message.rstrip(".") or "no details given"
    text = f"{host}: {proto} {what}{user}{port} failed: {msg}."
    extra = hint(issue.protocol, issue.port, issue.user, issue.message)
    return f"{text} {extra}" if extra else text


def login_failures(host: str, output: str | None) -> list[str]:
    """Sentences for plugin 104410 (failure for provided credentials)."""
    issues = parse_issue_blocks(output)
    if not issues:
        return [f"{host}: plugin 104410 reports a login failure for the provided credentials."]
    return [_sentence(host, i, "login") for i in issues]


def patch_assessment_failures(host: str, output: str | None) -> list[str]:
    """Sentences for plugin 21745 (OS Security Patch Assessment Failed), old and new."""
    issues = [i for i in parse_issue_blocks(output) if i.message]
    out = []
    for i in issues:
        via = f" ({i.protocol})" if i.protocol else ""
        text = f"{host}: OS security patch assessment failed{via}: {i.message.rstrip('.')}."
        extra = hint(i.protocol, i.port, i.user, i.message)
        out.append(f"{text} {extra}" if extra else text)
    if not out and output:
        for line in output.replace("\r\n", "\n").split("\n"):
            line = line.strip().lstrip("- ").strip()
            if line and not line.endswith(":"):
                proto = "ssh" if " ssh" in line else "smb" if " smb" in line else None
                extra = hint(proto, None, None, line)
                out.append(f"{host}: {line}" + (f" {extra}" if extra else ""))
    return out or [f"{host}: plugin 21745 reports that local security checks could not run."]


_AS = "protocol as "


def _as_user(text: str) -> str | None:
    """The account in "... protocol as 'user'. ...": from the first "protocol as " to the
    next ". " at least one character on. With ``str.find``, linear: the lazy regular
    expression this replaces rescanned to the end from every later "protocol as " when no
    ". " followed (2,000 repetitions: 0.23 s; 8,000: 4.3 s)."""
    start = text.find(_AS)
    if start < 0:
        return None
    end = text.find(". ", start + len(_AS) + 1)
    return None if end < 0 else text[start + len(_AS) : end].strip("'")


def privilege_issues(host: str, output: str | None) -> list[str]:
    """Sentences for plugin 110385 (logged in, insufficient privilege)."""
    issues = parse_issue_blocks(output)
    i = issues[0] if issues else CredentialIssue()
    user = i.user
    if user is None and output:
        user = _as_user(output.replace("\n", " "))
    problems = [
        f"plugin {m.group(1)}: {m.group(2).rstrip('.')}"
        for line in (output or "").splitlines()
        if (m := _PROBLEM.match(line.strip()))
    ]
    via = f" via {i.protocol.upper()}" if i.protocol else ""
    who = f" as '{user}'" if user else ""
    port = f" on port {i.port}" if i.port else ""
    detail = f" ({'; '.join(problems[:3])})" if problems else ""
    who_fix = f"'{user}'" if user else "the account"
    return [
        f"{host}: logged in{via}{who}{port}, but the account lacks privilege for some "
        f"checks{detail}. Give {who_fix} root/administrator rights or configure privilege "
        "escalation."
    ]


def smb_admin_issue(host: str, plugin_id: int, output: str | None) -> str:
    """Sentence for 24786 (no admin privileges) and 26917 (registry not accessible)."""
    text = " ".join((output or "").split())
    if plugin_id == 26917:
        return (
            f"{host}: SMB: {text or 'Nessus could not access the Windows registry'}. "
            "Start the Remote Registry service and allow the scan account to read it."
        )
    return (
        f"{host}: SMB: {text or 'the Windows scan was not performed with admin privileges'} "
        "Check the SMB password and domain and that the account is a local administrator "
        "with the ADMIN$ share enabled."
    )


def not_available(host: str, output: str | None) -> list[str]:
    """Sentences for 117886 (OS Security Patch Assessment Not Available)."""
    return [
        f"{host}: OS security patch assessment not available: {i.message.rstrip('.')}."
        for i in parse_issue_blocks(output)
        if i.message
    ]
