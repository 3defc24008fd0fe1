"""Our schemas and fast validator give the official runtime-spec schema's verdicts.

Three judges must agree on every document: pyoci.validate (the fast path),
jsonschema with our schema file, and jsonschema with the official schema set
from ../shared/oci-runtime-spec/schema.  The official examples, a structural
comparison of the schemas, and hypothesis-mutated documents check that.
"""
import copy
import json
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from hypothesis import event, given, settings, strategies as st
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from pyoci import validate
from pyoci.spec import default_config
from pyoci.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
OFFICIAL_DIR = SHARED / "oci-runtime-spec" / "schema"
OFFICIAL_ABSENT = f"official runtime-spec schemas not found at {OFFICIAL_DIR}"
needs_official = pytest.mark.skipif(not OFFICIAL_DIR.is_dir(), reason=OFFICIAL_ABSENT)

KINDS = {
    # kind: (our schema, official entry point, fast validator)
    "config": ("config.schema.json", "config-schema.json", validate.validate_config),
    "state": ("state.schema.json", "state-schema.json", validate.validate_state),
    "features": ("features.schema.json", "features-schema.json", validate.validate_features),
}

# What `pyoci spec` writes, which is what `runc spec` writes.
RUNC_SPEC = default_config()


LINUX_KITCHEN_SINK = {
    "ociVersion": "1.3.0",
    "root": {"path": "/var/lib/rootfs"},
    "process": {
        "terminal": False,
        "consoleSize": {"height": 24, "width": 80},
        "cwd": "/srv",
        "commandLine": "app --serve",
        "user": {"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [4, 27], "username": "app"},
        "apparmorProfile": "pyoci-default",
        "oomScoreAdj": -500,
        "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
        "scheduler": {"policy": "SCHED_DEADLINE", "nice": -5, "priority": 0,
                      "flags": ["SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM"],
                      "runtime": 10000000, "deadline": 30000000, "period": 30000000},
        "rlimits": [{"type": "RLIMIT_CPU", "soft": 0, "hard": 18446744073709551615}],
        "execCPUAffinity": {"initial": "0-3, 7", "final": "4"},
    },
    "mounts": [
        {"destination": "/data", "source": "/srv/data", "type": "bind", "options": ["rbind", "idmap"],
         "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
         "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]},
    ],
    "hooks": {
        "createRuntime": [{"path": "/usr/libexec/netns-hook", "args": ["netns-hook", "up"], "timeout": 10}],
        "poststop": [{"path": "/usr/libexec/netns-hook", "env": ["MODE=down"]}],
    },
    "annotations": {"io.pyoci.test": "yes", "": "an empty key is allowed"},
    "linux": {
        "namespaces": [{"type": "user"}, {"type": "time"}, {"type": "network", "path": "/run/netns/test"}],
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "timeOffsets": {"boottime": {"secs": -3600, "nanosecs": 500}},
        "devices": [{"type": "u", "path": "/dev/null2", "major": 1, "minor": 3, "fileMode": 511}],
        "netDevices": {"eth1": {"name": "net0"}, "wlan0": {}},
        "cgroupsPath": "system.slice:pyoci:test",
        "resources": {
            "memory": {"limit": 1073741824, "swap": -1, "swappiness": 60, "checkBeforeUpdate": True},
            "cpu": {"shares": 512, "quota": -1, "idle": 1, "cpus": "0-1", "mems": "0"},
            "blockIO": {"weight": 100,
                        "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                        "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
            "hugepageLimits": [{"pageSize": "1GB", "limit": 0}],
            "pids": {"limit": -1},
            "rdma": {"mlx5_0": {"hcaHandles": 2, "hcaObjects": 100}},
            "unified": {"memory.high": "max", "io.weight": "default 100"},
        },
        "intelRdt": {"closID": "guaranteed", "schemata": ["L3:0=ff"], "l3CacheSchema": "L3:0=ff",
                     "memBwSchema": "MB:0=50", "enableMonitoring": True},
        "memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "0-1", "flags": ["MPOL_F_STATIC_NODES"]},
        "sysctl": {"net.ipv4.ping_group_range": "0 2147483647"},
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "listenerPath": "/run/seccomp-agent.sock",
            "listenerMetadata": "profile=default",
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "errnoRet": 38,
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                          {"index": 1, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]},
            ],
        },
        "rootfsPropagation": "private",
        "mountLabel": "system_u:object_r:container_file_t:s0",
        "personality": {"domain": "LINUX32", "flags": []},
    },
}

# The platforms the official examples do not show (windows, solaris, vm).
OTHER_PLATFORMS = {
    "ociVersion": "1.3.0",
    "root": {"path": "rootfs"},
    "windows": {
        "layerFolders": ["C:\\layers\\1", "C:\\layers\\2"],
        "devices": [{"id": "24E552D7-6523-47F7-A647-D3465BF1F5CA", "idType": "class"}],
        "resources": {"memory": {"limit": 2097152},
                      "cpu": {"count": 2, "shares": 256, "maximum": 5000, "affinity": {"mask": 3, "group": 0}},
                      "storage": {"iops": 50, "bps": 1000, "sandboxSize": 10}},
        "network": {"endpointList": ["7a010682"], "allowUnqualifiedDNSQuery": True, "DNSSearchList": ["a.com"],
                    "networkSharedContainerName": "c1", "networkNamespace": "ns1"},
        "credentialSpec": {},
        "servicing": False,
        "ignoreFlushesDuringBoot": True,
        "hyperv": {"utilityVMPath": "C:\\uvm"},
    },
    "solaris": {"milestone": "svc:/milestone/container:default", "limitpriv": "default", "maxShmMemory": "512m",
                "cappedCPU": {"ncpus": "8"}, "cappedMemory": {"physical": "512m", "swap": "512m"},
                "anet": [{"linkname": "net0", "lowerLink": "net2", "allowedAddress": "172.17.0.2/16",
                          "configureAllowedAddress": "true", "defrouter": "172.17.0.1/16",
                          "linkProtection": "mac-nospoof, ip-nospoof", "macAddress": "02:42:f8:52:c7:16"}]},
    "vm": {"hypervisor": {"path": "/usr/bin/qemu", "parameters": ["-m", "1G"]},
           "kernel": {"path": "/boot/vmlinuz", "parameters": ["console=ttyS0"], "initrd": "/boot/initrd"},
           "image": {"path": "/images/root.qcow2", "format": "qcow2"},
           "hwConfig": {"deviceTree": "/dt", "vcpus": 2, "memory": 1024, "dtdevs": ["/soc/x"],
                        "iomems": [{"firstGFN": 1, "firstMFN": 2, "nrMFNs": 3}], "irqs": [5, 6]}},
}

FULL_STATE = {"ociVersion": "1.3.0", "id": "c1", "status": "created", "pid": 4422, "bundle": "/b",
              "annotations": {"k": "v"}}

# Values that sit on the edges of what the schemas accept.
EDGE_INTEGERS = [
    -2**63 - 1, -2**63, -2**31 - 1, -2**31, -1, 0, 1, 255, 256, 511, 512, 65535, 65536,
    2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
]
EDGE_STRINGS = [
    "", "\n", "x", "foo", "RLIMIT_NOFILE", "RLIMIT_nofile", "RLIMIT_", "RLIMIT_CPU\n", "2MB", "64kB", "0MB", "1GB",
    "c", "u", "cb", "c\n", "MB:0=100", "MB:", "MB:\nx", "mb:0", "0-3", "0, 2-3", "0-a", "CAP_SYS_ADMIN", "CAP_",
    "CAP_sys", "rootfs",
]
EDGE_VALUES = EDGE_INTEGERS + EDGE_STRINGS + [None, True, False, 0.0, 1.0, 1.5, -1.0, 1e20, [], {}, [""], {"": 0}]


# --- the three judges ------------------------------------------------------

@cache
def our_schema_validator(kind):
    return Draft4Validator(json.loads((REPO / "schemas" / KINDS[kind][0]).read_text()))


@cache
def official_validator(kind):
    """jsonschema with the official files, their relative $refs resolved from the schema directory."""
    base = OFFICIAL_DIR.as_uri() + "/"
    registry = Registry().with_resources(
        (base + path.name, Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT4))
        for path in OFFICIAL_DIR.glob("*.json"))
    entry_point = {"$schema": "http://json-schema.org/draft-04/schema#", "$ref": base + KINDS[kind][1]}
    return Draft4Validator(entry_point, registry=registry)


def fast_verdict(kind, doc):
    """pyoci.validate's verdict, checking the error shape whenever it says no."""
    try:
        KINDS[kind][2](doc)
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message
        assert message.startswith(f"{kind}.json: ")
        return False
    return True


def verdicts(kind, doc):
    return {
        "fast": fast_verdict(kind, doc),
        "ours": our_schema_validator(kind).is_valid(doc),
        "official": official_validator(kind).is_valid(doc),
    }


def edited(doc, path, value):
    """A copy of ``doc`` with the value at ``path`` set."""
    doc = copy.deepcopy(doc)
    node_at(doc, path[:-1])[path[-1]] = value
    return doc


def without(doc, key):
    return {name: value for name, value in doc.items() if name != key}


# --- official examples -----------------------------------------------------

def official_examples():
    if not OFFICIAL_DIR.is_dir():
        return [pytest.param(None, id="absent", marks=pytest.mark.skip(reason=OFFICIAL_ABSENT))]
    return sorted(OFFICIAL_DIR.glob("test/*/*/*.json"))


@pytest.mark.parametrize("example", official_examples(), ids=lambda path: "/".join(path.parts[-3:]))
def test_official_examples(example):
    kind, expected = example.parts[-3], example.parts[-2] == "good"
    try:
        doc = json.loads(example.read_text())
    except json.JSONDecodeError:
        assert not expected, "only a bad example may be unparseable"
        return
    assert verdicts(kind, doc) == {"fast": expected, "ours": expected, "official": expected}


# Edits of LINUX_KITCHEN_SINK where draft-04 or Python's re decide, with the official verdict.
TRICKY_CONFIG_EDITS = [
    (("process", "user", "uid"), True, False),  # a boolean is not an integer
    (("process", "user", "uid"), 1.0, False),  # in draft-04 neither is 1.0
    (("process", "oomScoreAdj"), 2**70, True),  # no bounds at all
    (("process", "rlimits", 0, "hard"), 2**64 - 1, True),
    (("process", "rlimits", 0, "hard"), 2**64, False),
    (("linux", "resources", "pids", "limit"), -2**63, True),
    (("linux", "resources", "pids", "limit"), -2**63 - 1, False),
    (("linux", "resources", "blockIO", "weight"), 65535, True),
    (("linux", "resources", "blockIO", "weight"), 65536, False),
    (("hooks", "createRuntime", 0, "timeout"), 0, False),
    (("process", "rlimits", 0, "type"), "RLIMIT_CPU\n", True),  # re.search: $ matches before a final newline
    (("linux", "resources", "hugepageLimits", 0, "pageSize"), "2MB\n", True),
    (("linux", "intelRdt", "memBwSchema"), "MB:1\n", True),
    (("linux", "intelRdt", "memBwSchema"), "MB:1\n2", False),
    (("linux", "devices", 0, "type"), "p", True),
    (("process", "execCPUAffinity", "initial"), "", True),
    (("annotations",), {"": 1}, True),  # '.{1,}' matches neither the empty key...
    (("annotations",), {"\n": 1}, True),  # ...nor a lone newline, so their values go unchecked
    (("annotations",), {"a\n": 1}, False),
    (("linux", "netDevices", "eth9"), "eth9", False),  # additionalProperties
    (("linux", "personality"), [], False),  # the official's "type" beside $ref is ignored; its target says object
    (("linux", "seccomp", "syscalls", 0, "names"), [], False),  # minItems
    (("windows",), {"layerFolders": []}, False),
    (("linux", "namespaces", 0), {"type": "pid", "unknown": 1}, True),  # unknown keys are allowed
]


@needs_official
@pytest.mark.parametrize("path, value, expected", TRICKY_CONFIG_EDITS)
def test_tricky_config_edits(path, value, expected):
    doc = edited(LINUX_KITCHEN_SINK, path, value)
    assert verdicts("config", doc) == {"fast": expected, "ours": expected, "official": expected}


# --- structural equality ---------------------------------------------------

class Canonicalizer:
    """Rewrites a schema into one normal form using only verdict-preserving steps.

    Follows $refs (draft-04 ignores a $ref's siblings), drops annotations,
    unwraps a one-branch anyOf, merges allOf branches that constrain disjoint
    properties, sorts enum and required, and spells the official '.{1,}'
    patternProperties as '.' (re.search matches the same keys with both).
    """

    def __init__(self, directory):
        self.directory = directory

    @cache
    def load(self, file_name):
        return json.loads((self.directory / file_name).read_text())

    def canonical(self, node, file_name):
        if "$ref" in node:
            target_file, _, pointer = node["$ref"].partition("#")
            target_file = target_file or file_name
            target = self.load(target_file)
            for token in pointer.split("/")[1:]:
                target = target[token]
            return self.canonical(target, target_file)
        result = {}
        for keyword, argument in node.items():
            if keyword in ("$schema", "title", "description", "definitions"):
                continue
            if keyword == "properties":
                merge(result, {keyword: {name: self.canonical(sub, file_name) for name, sub in argument.items()}})
            elif keyword == "patternProperties":
                merge(result, {keyword: {{".{1,}": "."}.get(pattern, pattern): self.canonical(sub, file_name)
                                         for pattern, sub in argument.items()}})
            elif keyword in ("items", "additionalProperties"):
                merge(result, {keyword: self.canonical(argument, file_name)})
            elif keyword in ("enum", "required"):
                merge(result, {keyword: sorted(argument)})
            elif keyword == "allOf" or (keyword == "anyOf" and len(argument) == 1):
                for branch in argument:
                    merge(result, self.canonical(branch, file_name))
            else:
                merge(result, {keyword: argument})
        return result


def merge(into, extra):
    for keyword, argument in extra.items():
        if keyword not in into:
            into[keyword] = argument
        elif keyword == "properties":
            assert not into[keyword].keys() & argument.keys(), "allOf branches overlap"
            into[keyword] = {**into[keyword], **argument}
        elif keyword == "required":
            into[keyword] = sorted(set(into[keyword]) | set(argument))
        else:
            assert into[keyword] == argument, f"allOf branches disagree on {keyword}"


@needs_official
@pytest.mark.parametrize("kind", KINDS)
def test_our_schema_is_the_official_one_in_normal_form(kind):
    ours, official_entry_point = KINDS[kind][0], KINDS[kind][1]
    our_form = Canonicalizer(REPO / "schemas").canonical({"$ref": ours}, ours)
    official_form = Canonicalizer(OFFICIAL_DIR).canonical({"$ref": official_entry_point}, official_entry_point)
    assert our_form == official_form


# --- hypothesis: mutated documents -----------------------------------------

def node_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from node_paths(child, prefix + (key,))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from node_paths(child, prefix + (index,))


def node_at(doc, path):
    for key in path:
        doc = doc[key]
    return doc


def field_of(path):
    """The object key nearest to a path's end: ``names`` for seccomp...names[0]."""
    return next((key for key in reversed(path) if isinstance(key, str)), "")


def subtrees_by_key(docs):
    """Every value found under each object key in ``docs``, to graft elsewhere."""
    found = {}
    for doc in docs:
        for path in node_paths(doc):
            if path and isinstance(path[-1], str):
                found.setdefault(path[-1], []).append(node_at(doc, path))
    return found


@cache
def official_keyword_values(keyword):
    """Every property name, enum choice or pattern (by ``keyword``) in the official schemas."""
    values = set()
    for schema_file in OFFICIAL_DIR.glob("*.json"):
        schema = json.loads(schema_file.read_text())
        for path in node_paths(schema):
            if path and path[-1] == keyword:
                argument = node_at(schema, path)
                values.update([argument] if isinstance(argument, str) else argument)
    return sorted(values)


@cache
def constrained_fields(kind):
    """Property names whose official schema has an enum, pattern, bound or minItems."""
    official = Canonicalizer(OFFICIAL_DIR).canonical({"$ref": KINDS[kind][1]}, KINDS[kind][1])
    constraints = {"enum", "pattern", "minimum", "maximum", "minItems"}
    names = set()
    for path in node_paths(official):
        if len(path) >= 2 and path[-2] == "properties":
            schema = node_at(official, path)
            if constraints & (schema.keys() | schema.get("items", {}).keys()):
                names.add(path[-1])
    return names


def official_good_examples(kind):
    return [json.loads(path.read_text()) for path in sorted(OFFICIAL_DIR.glob(f"test/{kind}/good/*.json"))]


def keys():
    return (st.sampled_from(official_keyword_values("properties")) | st.sampled_from(["", "\n", "x"])
            | st.text(max_size=4))


def strings():
    """Near misses, enum choices, and strings that match (under re.search) each official pattern."""
    return (st.sampled_from(EDGE_STRINGS) | st.sampled_from(official_keyword_values("enum")) | st.text(max_size=6)
            | st.one_of([st.from_regex(pattern) for pattern in official_keyword_values("pattern")]))


def integers():
    return st.sampled_from(EDGE_INTEGERS) | st.integers()


def json_values():
    leaves = (st.sampled_from(EDGE_VALUES).map(copy.deepcopy) | strings() | integers()
              | st.floats(allow_nan=False, allow_infinity=False))
    return st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys(), inner, max_size=3), max_leaves=6)


def near_kind_values(node):
    """Values of the kind ``node`` has, or easily taken for it (True for 1, 1.0 for 1); None for objects.

    An array is replaced by one of its prefixes, possibly empty.
    """
    if isinstance(node, list):
        return st.integers(0, len(node)).map(lambda size: copy.deepcopy(node[:size]))
    if isinstance(node, bool):
        return st.booleans() | st.sampled_from([0, 1, "true"])
    if isinstance(node, int):
        return integers() | st.booleans() | integers().map(float) | st.sampled_from([0.5, -0.5, str(node)])
    if isinstance(node, str):
        return strings()
    return None


def pick_path(chooser, doc, favoured_fields):
    """A path into ``doc``: first a field name, then one place it occurs.

    Choosing the name first makes rare fields (pageSize, memBwSchema) as
    likely as the long string arrays (capabilities, mount options); half
    the time the name is one of ``favoured_fields`` if the document has any.
    """
    paths_by_field = {}
    for path in node_paths(doc):
        paths_by_field.setdefault(field_of(path), []).append(path)
    fields = sorted(paths_by_field)
    favoured = [field for field in fields if field in favoured_fields]
    if favoured and chooser.random() < 0.5:
        fields = favoured
    return chooser.choice(paths_by_field[chooser.choice(fields)])


@st.composite
def mutated_documents(draw, kind, bases, edit_counts=(1, 1, 2, 3)):
    """A base document after a few random edits anywhere in it (single edits half the time).

    Edits: replace a value with an edge value or random JSON; tweak a value
    keeping (nearly) its kind: out-of-range numbers, 1.0 or True for an
    integer, bad enums, bad patterns, a shortened array; delete a key or
    element; add a known or random key, or an array element; graft a
    subtree that some base holds under the same key.
    """
    grafts = subtrees_by_key(bases)

    def value_for(key):
        if key in grafts and draw(st.booleans()):
            return copy.deepcopy(draw(st.sampled_from(grafts[key])))
        return draw(json_values())

    # sampled_from favours the first choices; a seeded Random does not.
    chooser = draw(st.randoms(use_true_random=False))
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.sampled_from(edit_counts))):
        # Tweaks and additions weigh double: they more often keep a document valid.
        edit = draw(st.sampled_from(["replace", "tweak", "tweak", "delete", "add", "add", "graft"]))
        path = pick_path(chooser, doc, constrained_fields(kind) if edit == "tweak" else ())
        node = node_at(doc, path)
        if edit == "add" and isinstance(node, dict):
            key = draw(keys())
            node[key] = value_for(key)
        elif edit == "add" and isinstance(node, list):
            element = copy.deepcopy(chooser.choice(node)) if node and draw(st.booleans()) else draw(json_values())
            node.insert(draw(st.integers(0, len(node))), element)
        elif not path:
            continue  # the root is only ever edited inside
        elif edit == "delete":
            del node_at(doc, path[:-1])[path[-1]]
        elif edit == "tweak" and near_kind_values(node) is not None:
            node_at(doc, path[:-1])[path[-1]] = draw(near_kind_values(node))
        elif edit == "graft" and isinstance(path[-1], str):
            node_at(doc, path[:-1])[path[-1]] = value_for(path[-1])
        else:
            node_at(doc, path[:-1])[path[-1]] = draw(json_values())
    return doc


@st.composite
def documents_with_one_constrained_value(draw, kind, bases):
    """A base document with one value under an enum, pattern, bound or minItems set to one of (nearly) its kind."""
    chooser = draw(st.randoms(use_true_random=False))
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    by_field = {}
    for path in node_paths(doc):
        if field_of(path) in constrained_fields(kind) and near_kind_values(node_at(doc, path)) is not None:
            by_field.setdefault(field_of(path), []).append(path)
    path = chooser.choice(by_field[chooser.choice(sorted(by_field))])  # rare fields as likely as common ones
    node_at(doc, path[:-1])[path[-1]] = draw(near_kind_values(node_at(doc, path)))
    return doc


def assert_judges_agree(kind, documents, examples):
    seen = Counter()

    @settings(max_examples=examples, deadline=None)
    @given(documents)
    def judges_agree(doc):
        verdict = verdicts(kind, doc)
        assert verdict["fast"] == verdict["ours"] == verdict["official"], verdict
        seen[verdict["official"]] += 1
        event("valid" if verdict["official"] else "invalid")

    judges_agree()
    total = sum(seen.values())
    assert min(seen[True], seen[False]) >= 0.10 * total, f"one-sided sample: {dict(seen)}"


@needs_official
def test_mutated_configs():
    bases = official_good_examples("config") + [RUNC_SPEC, LINUX_KITCHEN_SINK, OTHER_PLATFORMS]
    assert_judges_agree("config", mutated_documents("config", bases), examples=300)


@needs_official
def test_constrained_config_values():
    bases = [doc for doc in [RUNC_SPEC, LINUX_KITCHEN_SINK, OTHER_PLATFORMS] + official_good_examples("config")
             if any(field_of(path) in constrained_fields("config") for path in node_paths(doc))]
    assert_judges_agree("config", documents_with_one_constrained_value("config", bases), examples=200)


@needs_official
def test_mutated_states():
    bases = official_good_examples("state") + [FULL_STATE]
    # Four of a state's six fields are required: one edit at a time keeps enough states valid.
    assert_judges_agree("state", mutated_documents("state", bases, edit_counts=(1,)), examples=200)


@needs_official
def test_mutated_features():
    bases = official_good_examples("features")
    assert_judges_agree("features", mutated_documents("features", bases), examples=100)


# --- error messages --------------------------------------------------------

@pytest.mark.parametrize("doc, expected", [
    (edited(RUNC_SPEC, ("linux", "namespaces", 2, "type"), "foo"),
     "config.json: linux.namespaces[2].type: 'foo' is not one of "
     "['cgroup', 'ipc', 'mount', 'network', 'pid', 'time', 'user', 'uts'] "
     "(config-linux.md#namespaces)"),
    (without(RUNC_SPEC, "ociVersion"), "config.json: (root): 'ociVersion' is a required property "
     "(config.md#configuration)"),
    (edited(RUNC_SPEC, ("process", "args"), "sh -c true"),
     "config.json: process.args: 'sh -c true' is not of type 'array' (config.md#process)"),
    (edited(RUNC_SPEC, ("process", "args"), ["sh", 1]), "config.json: process.args[1]: 1 is not of type 'string' (config.md#process)"),
    (edited(RUNC_SPEC, ("process", "user", "uid"), -1),
     "config.json: process.user.uid: -1 is less than the minimum of 0 "
     "(config.md#posix-platform-user)"),
    (edited(RUNC_SPEC, ("process", "rlimits", 0, "type"), "NOFILE"),
     "config.json: process.rlimits[0].type: 'NOFILE' does not match '^RLIMIT_[A-Z]+$' "
     "(config.md#posix-process)"),
    (edited(RUNC_SPEC, ("process", "rlimits", 0, "hard"), 1.0),
     "config.json: process.rlimits[0].hard: 1.0 is not of type 'integer' "
     "(config.md#posix-process)"),
    (edited(RUNC_SPEC, ("annotations",), {"a\nb": 1}),
     'config.json: annotations["a\\nb"]: 1 is not of type \'string\' (config.md#annotations)'),
    (edited(RUNC_SPEC, ("linux", "seccomp"), {}), "config.json: linux.seccomp: 'defaultAction' is a required property "
     "(config-linux.md#seccomp)"),
])
def test_error_message(doc, expected):
    with pytest.raises(ConfigError) as caught:
        validate.validate_config(doc)
    assert str(caught.value) == expected


def test_state_and_features_errors_name_their_document():
    with pytest.raises(ConfigError, match=r"^state\.json: status: 'paused' is not one of "):
        validate.validate_state(dict(FULL_STATE, status="paused"))
    with pytest.raises(ConfigError, match=r"^features\.json: \(root\): 'ociVersionMax' is a required property$"):
        validate.validate_features({"ociVersionMin": "1.0.0"})


def test_fast_verdict_stands_when_jsonschema_finds_nothing(monkeypatch):
    monkeypatch.setattr(validate, "_checker", lambda name: lambda doc: validate._Failure("forced").at(0).at("mounts"))
    with pytest.raises(ConfigError) as caught:
        validate.validate_config(RUNC_SPEC)
    assert str(caught.value) == "config.json: mounts[0]: forced (config.md#mounts)"


def test_fast_wording_without_jsonschema(monkeypatch):
    for module in ("jsonschema", "jsonschema.exceptions", "jsonschema.validators"):
        monkeypatch.setitem(sys.modules, module, None)  # makes importing it fail
    with pytest.raises(ConfigError) as caught:
        validate.validate_config(edited(RUNC_SPEC, ("linux", "namespaces", 2, "type"), "foo"))
    assert str(caught.value) == ("config.json: linux.namespaces[2].type: 'foo' is not one of "
                                 "['cgroup', 'ipc', 'mount', 'network', 'pid', 'time', 'user', 'uts'] "
                                 "(config-linux.md#namespaces)")


# --- the fast path itself --------------------------------------------------

def test_valid_config_does_not_import_jsonschema():
    probe = (
        "import json, sys\n"
        "from pyoci.validate import validate_config\n"
        "validate_config(json.loads(sys.argv[1]))\n"
        "assert 'jsonschema' not in sys.modules, 'a valid config imported jsonschema'\n"
        "try:\n"
        "    validate_config({})\n"
        "except Exception:\n"
        "    assert 'jsonschema' in sys.modules, 'an invalid config should be explained by jsonschema'\n"
        "else:\n"
        "    raise SystemExit('{} passed as a config')\n"
    )
    subprocess.run([sys.executable, "-c", probe, json.dumps(LINUX_KITCHEN_SINK)], cwd=REPO, check=True)


@pytest.mark.parametrize("kind", KINDS)
def test_our_schema_is_valid_draft_04(kind):
    Draft4Validator.check_schema(validate.load_schema(KINDS[kind][0]))


@pytest.mark.parametrize("kind", KINDS)
def test_every_definition_compiles(kind):
    """$refs compile lazily, so compile each one here to find unsupported keywords now."""
    schema = validate.load_schema(KINDS[kind][0])
    compiler = validate._Compiler(schema)
    for definition in [schema, *schema.get("definitions", {}).values()]:
        compiler.compile(definition)


def test_unsupported_keyword_is_refused():
    with pytest.raises(ValueError, match="'oneOf' is not supported"):
        validate._Compiler({}).compile({"oneOf": [{"type": "string"}]})


def test_schema_path_finds_every_schema():
    for schema_name, _, _ in KINDS.values():
        assert Path(validate.schema_path(schema_name)).is_file()


def test_schema_path_prefers_package_data(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "_PACKAGE_DIR", str(tmp_path / "pyoci"))
    (tmp_path / "pyoci" / "schemas").mkdir(parents=True)
    (tmp_path / "pyoci" / "schemas" / "installed.json").write_text("{}")
    assert validate.schema_path("installed.json") == str(tmp_path / "pyoci" / "schemas"
                                                         / "installed.json")
    assert validate.schema_path("in-source.json") == str(tmp_path / "schemas" / "in-source.json")


# ------------------------------------------- patterns, matched without re
SEARCHED_PATTERNS = [".", "^RLIMIT_[A-Z]+$", "^[0-9, -]*$", "^MB:[^\\n]*$", "^[cbup]$",
                     "^[1-9][0-9]*[KMG]B$", "^CAP_[A-Z_]+$", "^a\\.b$", "^(x|y)$", "^[]x]$",
                     "^[\\]x]+$", "^ab*c+$", "x$"]


@pytest.mark.parametrize("pattern", SEARCHED_PATTERNS)
@given(data=st.data())
def test_searcher_is_re_search(pattern, data):
    import re
    text = data.draw(st.one_of(st.from_regex(pattern), st.text(alphabet="abcxyMB:0123456789,"
                                                                "KG-_ \n]\\.CAPRLIMT", max_size=12)))
    assert validate._searcher(pattern)(text) == (re.search(pattern, text) is not None), text


def test_schema_patterns_need_no_re():
    patterns = set()

    def collect(node):
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.add(node["pattern"])
            patterns.update(node.get("patternProperties", {}))
            for child in node.values():
                collect(child)
        elif isinstance(node, list):
            for child in node:
                collect(child)
    for name in ("config.schema.json", "state.schema.json", "features.schema.json"):
        collect(validate.load_schema(name))
    assert patterns
    for pattern in patterns:
        assert pattern == "." or validate._sequence(pattern) is not None, pattern
