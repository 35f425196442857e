#!/usr/bin/env python3
"""Checks docs/DEPLOY.md against the scripts, for tests/nitro/run.sh:
  check_doc.py DEPLOY.md OUTPUT_FILE HELP_FILE SOURCES...
- every line of a ```text block announced by `<!-- output: NAME -->` must be a line that the
  scripts printed in the fakes' run (OUTPUT_FILE, paths already mapped to their defaults);
  numbers, hex ids and hashes are wildcards; lines may be left out, not changed;
- every `make TARGET` in the document (code blocks and inline code) names a target that
  `make help` lists (HELP_FILE) or a build target, and every VAR=value given to make is a
  variable that one of SOURCES (Makefile, mk/*.mk, scripts/nitro/*.sh) uses.
Prints one line per problem; exits 1 if there is any."""
import re, sys

doc, out_file, help_file, *sources = sys.argv[1:]
text = open(doc).read()
printed = [l.rstrip() for l in open(out_file)]
targets = set(re.findall(r"^  ([a-zA-Z_-]+) ", open(help_file).read(), re.M)) | {"build", "model"}
source_text = "".join(open(f).read() for f in sources)
problems = []

def pattern(line):
    parts = []
    for tok in re.findall(r"[0-9a-f]{16,}|\d+|[^0-9]+?(?=[0-9]|$)|.", line):
        if re.fullmatch(r"[0-9a-f]{16,}", tok):
            parts.append("[0-9a-f]+")
        elif tok.isdigit():
            parts.append(r"\d+")
        else:
            parts.append(re.escape(tok))
    return re.compile("".join(parts))

samples = 0
for m in re.finditer(r"<!-- output: (\w+) -->\n(\s*)```text\n(.*?)\n\s*```", text, re.S):
    name, indent, body = m.group(1), m.group(2).replace("\n", ""), m.group(3)
    for line in body.split("\n"):
        line = line[len(indent):] if line.startswith(indent) else line
        if not line.strip():
            continue
        samples += 1
        rx = pattern(line.rstrip())
        if not any(rx.fullmatch(p) for p in printed):
            problems.append("output sample '%s': no printed line matches: %s" % (name, line))
if samples == 0:
    problems.append("no <!-- output: NAME --> samples found")

commands = re.findall(r"`(?:sudo )?make ([^`]*)`", text)
for block in re.findall(r"```sh\n(.*?)```", text, re.S):
    commands += re.findall(r"(?:^|&&|;)\s*(?:sudo )?make ([^#\n]*)", block, re.M)
for cmd in commands:
    words = re.sub(r"<[^>]*>", "X", cmd).split()
    for w in words:
        if "=" in w:
            var = w.split("=", 1)[0]
            if not re.fullmatch(r"[A-Z_0-9]+", var) or var not in source_text:
                problems.append("'make %s': %s is not a variable the scripts use" % (cmd, var))
        elif not w.startswith("-") and w not in targets:
            problems.append("'make %s': no target %s" % (cmd, w))
for p in problems:
    print(p)
print("checked %d sample lines and %d make commands" % (samples, len(commands)))
sys.exit(1 if problems else 0)
