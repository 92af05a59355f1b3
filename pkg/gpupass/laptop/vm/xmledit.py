"""A small element layer for editing XML that belongs to someone else (a user's libvirt domain).

In the spirit of virt-manager's virtinst ``xmlbuilder``: every element gpupass cares about
is reached by a fixed *path*, found if it is there and created if not; only the attributes
and text gpupass owns are set; and every change is written down in a *journal* so that
undoing it is exact: elements gpupass added are removed, attributes and text it changed get
their old values back, elements it removed are put back.

A path is a ``/``-separated list of steps, each a tag with optional predicates::

    devices/hostdev[source/address/@bus='0x01'][source/address/@slot='0x00']
    os/acpi/table[@type='raw'][.='/usr/share/gpupass/ssdt-battery.aml']
    qemu:commandline/qemu:arg[@value='-fw_cfg']

A predicate is ``[@attr='v']`` (an attribute), ``[child/path/@attr='v']`` (an attribute of
a descendant), or ``[.='v']`` (the text). Creating a step's element creates what its
predicates describe, so a created element is found again by the same path. Paths and the
journal survive a round trip through libvirt (which reorders and re-formats the domain),
which is why they locate elements by what they are, not by position.

Standard library only (laptop side).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

NAMESPACES = {
    "qemu": "http://libvirt.org/schemas/domain/qemu/1.0",
    "gpupass": "https://gpupass.invalid/xmlns/libvirt/domain/1.0",
}
for _prefix, _uri in NAMESPACES.items():
    ET.register_namespace(_prefix, _uri)

JOURNAL_NS = NAMESPACES["gpupass"]
JOURNAL_TAG = f"{{{JOURNAL_NS}}}attach"

_STEP = re.compile(r"(?P<tag>[A-Za-z_][\w.:-]*)(?P<preds>(?:\[[^\]']*'[^']*'\])*)")
_PRED = re.compile(r"\[(?P<where>[^\]=']*)='(?P<value>[^']*)'\]")


class PathError(ValueError):
    """A path that does not follow the grammar above (a programming error, not a user's)."""


def qname(tag: str) -> str:
    """``qemu:arg`` -> ``{http://libvirt.org/...}arg``; plain tags stay as they are."""
    prefix, sep, local = tag.partition(":")
    return f"{{{NAMESPACES[prefix]}}}{local}" if sep else tag


@dataclass(frozen=True)
class Predicate:
    path: tuple[str, ...]  # descendant tags, empty for the element itself
    attr: str | None  # None: the text
    value: str

    def holds(self, element: ET.Element) -> bool:
        target = element
        for tag in self.path:
            found = target.find(qname(tag))
            if found is None:
                return False
            target = found
        if self.attr is None:
            return (target.text or "").strip() == self.value
        return target.get(self.attr) == self.value

    def make_true(self, element: ET.Element) -> None:
        target = element
        for tag in self.path:
            found = target.find(qname(tag))
            target = found if found is not None else ET.SubElement(target, qname(tag))
        if self.attr is None:
            target.text = self.value
        else:
            target.set(self.attr, self.value)


@dataclass(frozen=True)
class Step:
    tag: str
    predicates: tuple[Predicate, ...]

    def matches(self, element: ET.Element) -> bool:
        return element.tag == qname(self.tag) and all(p.holds(element) for p in self.predicates)


def parse_path(path: str) -> tuple[Step, ...]:
    steps = []
    position = 0
    while position < len(path):
        match = _STEP.match(path, position)
        if not match:
            raise PathError(f"{path!r}: cannot parse at {path[position:]!r}")
        predicates = []
        for pred in _PRED.finditer(match["preds"]):
            where, value = pred["where"], pred["value"]
            if where == ".":
                predicates.append(Predicate((), None, value))
                continue
            *parents, last = where.split("/")
            if not last.startswith("@"):
                raise PathError(f"{path!r}: predicate {where!r} must end in @attribute or be '.'")
            predicates.append(Predicate(tuple(parents), last[1:], value))
        steps.append(Step(match["tag"], tuple(predicates)))
        position = match.end()
        if position < len(path):
            if path[position] != "/":
                raise PathError(f"{path!r}: expected '/' at {path[position:]!r}")
            position += 1
    return tuple(steps)


def quote(value: str) -> str:
    """A value for a predicate; the grammar has no escapes, so a quote cannot be in one."""
    if "'" in value:
        raise PathError(f"{value!r}: a path value cannot hold a single quote")
    return value


def find(root: ET.Element, path: str) -> ET.Element | None:
    element = root
    for step in parse_path(path):
        found = next((child for child in element if step.matches(child)), None)
        if found is None:
            return None
        element = found
    return element


def _parent_map(root: ET.Element) -> dict[ET.Element, ET.Element]:
    return {child: parent for parent in root.iter() for child in parent}


def _describe(path: str, attr: str | None = None) -> str:
    return f"{path}/@{attr}" if attr else path


class Editor:
    """Edits ``root`` in place and keeps the journal of what it did.

    The journal lives in the document itself (``<metadata><gpupass:attach>``), so that a
    later process (``gpupass vm detach``) can undo exactly what an earlier one did
    (``journal=False``: a document of gpupass's own, nothing to undo). An
    element gpupass added is *owned*: changes inside it are not journaled one by one,
    removing it undoes them all. ``changes`` lists this run's changes in words.
    """

    def __init__(self, root: ET.Element, owner: str = "", journal: bool = True) -> None:
        self.root = root
        self._keep_journal = journal
        self.changes: list[str] = []
        self._journal = self._find_journal()
        self._owner = owner
        self._owned: set[int] = set()
        self._created: set[int] = set()  # this run's: "add X" already says what they hold
        self._recorded: set[tuple[str, str, str]] = set()
        if self._journal is not None:
            for entry in self._journal:
                kind = entry.tag.rpartition("}")[2]
                self._recorded.add((kind, entry.get("path", ""), entry.get("attr", "")))
                if kind == "added" and entry.get("kind") == "whole":
                    element = find(root, entry.get("path", ""))
                    if element is not None:
                        self._owned.update(id(e) for e in element.iter())

    # The journal ------------------------------------------------------------------------

    def _find_journal(self) -> ET.Element | None:
        metadata = self.root.find("metadata")
        return None if metadata is None else metadata.find(JOURNAL_TAG)

    @property
    def journaled(self) -> bool:
        return self._journal is not None

    def _record(self, entry: str, path: str, **attrs: str) -> None:
        if not self._keep_journal:
            return
        key = (entry, path, attrs.get("attr", ""))
        if key in self._recorded and entry != "removed":
            return  # the first record holds the value from before gpupass
        self._recorded.add(key)
        if self._journal is None:
            metadata = self.root.find("metadata")
            created = metadata is None
            if created:
                metadata = ET.Element("metadata")
                # libvirt keeps <metadata> right after the uuid/title/description.
                anchors = [i for i, c in enumerate(self.root) if c.tag in ("name", "uuid", "title", "description")]
                self.root.insert(anchors[-1] + 1 if anchors else 0, metadata)
            self._journal = ET.SubElement(metadata, JOURNAL_TAG)
            if self._owner:
                self._journal.set("by", self._owner)
            if created:
                self._journal.set("metadata", "added")
        ET.SubElement(self._journal, f"{{{JOURNAL_NS}}}{entry}", {"path": path, **attrs})

    def _owns(self, element: ET.Element) -> bool:
        return id(element) in self._owned

    # Edits ------------------------------------------------------------------------------

    def ensure(self, path: str, *, container: bool = False, before: tuple[str, ...] = ()) -> ET.Element:
        """Find the element at ``path``, creating what is missing of it.

        A created last element is gpupass's own (a hostdev, a pin) and removed as a whole on
        undo, unless ``container``; parents created on the way are containers: removed on
        undo only if nothing else was put in them meanwhile. ``before``: tags the new last
        element goes in front of, the first found (libvirt's order, for a readable diff).
        """
        steps = parse_path(path)
        element = self.root
        for number, step in enumerate(steps):
            found = next((child for child in element if step.matches(child)), None)
            if found is None:
                last = number == len(steps) - 1
                found = ET.Element(qname(step.tag))
                for predicate in step.predicates:
                    predicate.make_true(found)
                index = len(element)
                if last and before:
                    tags = {qname(t) for t in before}
                    index = next((i for i, c in enumerate(element) if c.tag in tags), index)
                element.insert(index, found)
                sub_path = "/".join(path_steps(path)[: number + 1])
                whole = last and not container
                if not self._owns(element):
                    self._record("added", sub_path, kind="whole" if whole else "container")
                if whole:
                    self._owned.update(id(e) for e in found.iter())
                if id(element) not in self._created:
                    self.changes.append(f"add {sub_path}")
                self._created.update(id(e) for e in found.iter())
            element = found
        return element

    def set(self, element: ET.Element, path: str, attr: str, value: str | None) -> None:
        """Set (or with None, remove) an attribute of the element found at ``path``."""
        old = element.get(attr)
        if old == value:
            return
        if not self._owns(element):
            self._record("set", path, attr=attr, **({"old": old} if old is not None else {}))
        if value is None:
            del element.attrib[attr]
            self.changes.append(f"remove {_describe(path, attr)} (was {old!r})")
        else:
            element.set(attr, value)
            if id(element) not in self._created:
                was = f" (was {old!r})" if old is not None else ""
                self.changes.append(f"set {_describe(path, attr)}={value!r}{was}")

    def set_text(self, element: ET.Element, path: str, value: str) -> None:
        old = (element.text or "").strip() if len(element) == 0 else element.text
        if old == value:
            return
        if not self._owns(element):
            self._record("text", path, **({"old": old} if old else {}))
        element.text = value
        if id(element) not in self._created:
            self.changes.append(f"set {path} text to {value!r}" + (f" (was {old!r})" if old else ""))

    def find_pair(self, parent: ET.Element, tag: str, option: str, value: str) -> ET.Element | None:
        """The ``tag`` element with ``value`` right after one with ``option`` (a QEMU argument)."""
        children = list(parent)
        for first, second in zip(children, children[1:], strict=False):
            if first.tag == second.tag == qname(tag) and (first.get("value"), second.get("value")) == (option, value):
                return second
        return None

    def add_pair(self, parent_path: str, tag: str, option: str, value: str) -> None:
        """Append ``<tag value=option/><tag value=value/>`` (``-acpitable file=X``) unless there.

        The option alone names nothing (a domain may pass ``-fw_cfg`` twice), so the pair is
        journaled by its value and removed together with the option right before it.
        """
        parent = self.ensure(parent_path, container=True)
        if self.find_pair(parent, tag, option, value) is not None:
            return
        for text in (option, value):
            ET.SubElement(parent, qname(tag), value=text)
        if not self._owns(parent):
            self._record("pair", f"{parent_path}/{tag}[@value='{quote(value)}']", option=option)
        self.changes.append(f"add {parent_path}/{tag} {option} {value}")

    def adopt(self, path: str) -> None:
        """Journal the element at ``path`` as added, though someone else put it there: a
        controller libvirt added at define time for a device gpupass added, which undo
        must take out with it."""
        if find(self.root, path) is not None:
            self._record("added", path, kind="whole")

    def remove(self, path: str) -> None:
        """Remove the element at ``path``, keeping a copy in the journal to put back."""
        element = find(self.root, path)
        if element is None:
            return
        parent = _parent_map(self.root)[element]
        parent_path = "/".join(path_steps(path)[:-1])
        if not self._owns(element):
            copy = ET.fromstring(ET.tostring(element))
            copy.tail = None
            index = str(list(parent).index(element))
            self._record("removed", parent_path, index=index, xml=ET.tostring(copy, encoding="unicode"))
        parent.remove(element)
        self.changes.append(f"remove {path}")

    # Undo -------------------------------------------------------------------------------

    def undo(self) -> None:
        """Undo every journaled change, newest first, and drop the journal."""
        if self._journal is None:
            return
        for entry in reversed(list(self._journal)):
            kind = entry.tag.rpartition("}")[2]
            path = entry.get("path", "")
            if kind == "removed":
                parent = self.ensure_plain(path)
                parent.insert(int(entry.get("index", len(parent))), ET.fromstring(entry.get("xml", "")))
                self.changes.append(f"put back {ET.fromstring(entry.get('xml', '')).tag} under {path or 'domain'}")
                continue
            element = find(self.root, path) if path else self.root
            if element is None:
                continue  # already gone (the user removed it): nothing to undo there
            if kind == "pair":
                parent_path, tag = "/".join(path_steps(path)[:-1]), parse_path(path)[-1].tag
                parent = find(self.root, parent_path)
                second = None
                if parent is not None:
                    second = self.find_pair(
                        parent, tag, entry.get("option", ""), parse_path(path)[-1].predicates[0].value
                    )
                if parent is not None and second is not None:
                    children = list(parent)
                    parent.remove(children[children.index(second) - 1])
                    parent.remove(second)
                    self.changes.append(f"remove {parent_path}/{tag} {entry.get('option')} {second.get('value')}")
                continue
            if kind == "added":
                parents = _parent_map(self.root)
                if entry.get("kind") == "container" and len(element):
                    continue
                parents[element].remove(element)
                self.changes.append(f"remove {path}")
            elif kind == "set":
                old = entry.get("old")
                if old is None:
                    element.attrib.pop(entry.get("attr", ""), None)
                else:
                    element.set(entry.get("attr", ""), old)
                self.changes.append(f"restore {_describe(path, entry.get('attr'))}")
            elif kind == "text":
                element.text = entry.get("old")
                self.changes.append(f"restore {path} text")
        metadata = self.root.find("metadata")
        added_metadata = self._journal.get("metadata") == "added"
        if metadata is not None:
            metadata.remove(self._journal)
            if added_metadata and len(metadata) == 0:
                self.root.remove(metadata)
        self._journal = None
        self._owned.clear()
        self._recorded.clear()

    def ensure_plain(self, path: str) -> ET.Element:
        """Find-or-create without journaling (used only while undoing)."""
        element = self.root
        for step in parse_path(path) if path else ():
            found = next((child for child in element if step.matches(child)), None)
            if found is None:
                found = ET.SubElement(element, qname(step.tag))
                for predicate in step.predicates:
                    predicate.make_true(found)
            element = found
        return element


def path_steps(path: str) -> list[str]:
    """A path split into its steps' source text (the '/' inside predicates kept)."""
    steps, depth, current = [], 0, ""
    for char in path:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "/" and depth == 0:
            steps.append(current)
            current = ""
        else:
            current += char
    steps.append(current)
    return steps


def parse(text: str) -> ET.Element:
    """Parse a document, keeping its namespace prefixes (libosinfo:, qemu:) when written out."""
    import io

    for _event, (prefix, uri) in ET.iterparse(io.StringIO(text), events=("start-ns",)):
        if prefix and uri not in NAMESPACES.values():
            try:
                ET.register_namespace(prefix, uri)
            except ValueError:
                pass  # a prefix ElementTree keeps for itself (ns0...): it picks another
    return ET.fromstring(text)


def to_text(root: ET.Element) -> str:
    """The document as gpupass shows and hands it on: indented two spaces, one line each."""
    copy = ET.fromstring(ET.tostring(root))
    for element in copy.iter():
        if element.text is not None and not element.text.strip() and len(element):
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    ET.indent(copy, "  ")
    # ElementTree declares every namespace on the root element; libvirt keeps a metadata
    # element's declaration where it finds it. Each metadata element is written on its own
    # so that it carries its own declaration, as libvirt and virt-install write them.
    metadata = copy.find("metadata")
    pieces: dict[str, str] = {}
    if metadata is not None:
        for number, child in enumerate(list(metadata)):
            marker = f"gpupass-metadata-{number}"
            tail, child.tail = child.tail, None
            pieces[f"<{marker} />"] = ET.tostring(child, encoding="unicode")
            placeholder = ET.Element(marker)
            placeholder.tail = tail
            index = list(metadata).index(child)
            metadata.remove(child)
            metadata.insert(index, placeholder)
    text = ET.tostring(copy, encoding="unicode")
    for marker, piece in pieces.items():
        text = text.replace(marker, piece, 1)
    return text + "\n"
