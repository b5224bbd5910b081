"""RIHS01 with ROS 2's rules (ros2.md section 4 and 4.1), the test_msgs corpus, and wstring CDR.

Oracles, none of them produced by this project's code:
* ros2.md section 4 / 4.1 tables (measured with rosidl-built ROS 2 installs and cross-checked);
* the type hashes that ``rosidl_generator_c`` wrote into the generated ``test_msgs/msg/detail/*__description.c``
  of a ROS 2 Kilted build (micro-ROS in hpmicro/hpm_sdk @a52d08d, ``middleware/microros/kilted/include/test_msgs``);
  the raw ``.msg`` sources embedded there are the vendored files below (same fields, same order). RIHS01 is
  unchanged from Iron to Kilted, and test_msgs references no distro type, so the same values hold in both stores;
* hand-assembled CDR bytes for wide strings (rmw_cyclonedds ``CDR_Legacy``: uint32 count of UTF-16 units, 4 bytes
  per unit; Fast CDR 2: 2 bytes per unit).
"""
from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import numpy as np
import pytest
from rosbags.interfaces import Nodetype
from rosbags.typesys.store import Typestore

from latentstack import msgs
from latentstack.msgs import typehash, wstring

ts = importlib.import_module("latentstack.msgs.typestore")  # the module (the package re-exports a function)

DISTROS = ("humble", "jazzy")

SPEC_4 = {  # ros2.md section 4 table: no char field, so ROS 2 and rosbags agree
    "std_msgs/msg/String": "df668c740482bbd48fb39d76a70dfd4bd59db1288021743503259e948f6b1a18",
    "std_msgs/msg/Byte": "41e1a3345f73fe93ede006da826a6ee274af23dd4653976ff249b0f44e3e798f",
    "std_msgs/msg/ByteMultiArray": "972fec7f50ab3c1d06783c228e79e8a9a509021708c511c059926261ada901d4",
    "geometry_msgs/msg/Accel": "dc448243ded9b1fcbcca24aba0c22f013dae06c354ba2d849571c0a2a3f57ca0",
    "nav_msgs/msg/Odometry": "3cc97dc7fb7502f8714462c526d369e35b603cfc34d946e3f2eda2766dfec6e0",
    "builtin_interfaces/msg/Time": "b106235e25a4c5ed35098aa0a61a3ee9c9b18d197f398b0e4206cea9acf9c197",
    "std_msgs/msg/Header": "f49fb3ae2cf070f793645ff749683ac6b06203e41c891e17701b1cb597ce6a01",
    "geometry_msgs/msg/Twist": "9c45bf16fe0983d80e3cfe750d6835843d265a9a6c46bd2e609fcddde6fb8d2a",
    "sensor_msgs/msg/Image": "d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
    "sensor_msgs/msg/CameraInfo": "b3dfd68ff46c9d56c80fd3bd4ed22c7a4ddce8c8348f2f59c299e73118e7e275",
    "sensor_msgs/msg/PointCloud2": "9198cabf7da3796ae6fe19c4cb3bdd3525492988c70522628af5daa124bae2b5",
    "sensor_msgs/msg/JointState": "a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e",
}

# ros2.md section 4.1 (Iron/Jazzy definitions). std_msgs/Char is the same in Humble; rmw_dds_common's Gid is not
# (Humble: char[24]; Iron on: char[16]), so its three values are Jazzy-only.
SPEC_41_BOTH = {"std_msgs/msg/Char": "3ad2d04dd29ba19d04b16659afa3ccaedd691914b02a64e82e252f2fa6a586a9"}
SPEC_41_JAZZY = {
    "rmw_dds_common/msg/ParticipantEntitiesInfo": "91a0593bacdcc50ea9bdcf849a938b128412cc1ea821245c663bcd26f83c295e",
    "rmw_dds_common/msg/NodeEntitiesInfo": "8ffef65ee2d088c63b1e8fcd31e800ba9fc8dbe0ee15ca60d1676de5218087a7",
    "rmw_dds_common/msg/Gid": "ab6f21cfbb0a6dbb837161e1110c2051a2850ed9f9c53944d7115d9bcebedf71",
}

CORPUS_DIR = Path(__file__).parent / "fixtures" / "test_msgs" / "msg"
CORPUS_SHA256 = {  # the vendored files, byte for byte as ros2-test-interface-files 0.10.1-1 ships them
    "Arrays": "6213099c3e3516d1c52c31c0f247dbcd569c4747a4fe239a24cb90864495b15e",
    "BasicTypes": "261c5c8a3e087941e5d135c4da1ab435cf11e612dcfbdfcde16b94be0f0933c7",
    "BoundedPlainSequences": "ceed235575c43c923489d51ecbc92f2f83e02004c2a9f6a6f5f3a40645948a38",
    "BoundedSequences": "3806afa38d0326eecc49c3a7cf9e1911d6dea3ab0f699ddfb24a8b89f53e89de",
    "Constants": "d953062cbef94126cb43477a394ddb86a692f9f1272af0111885e3ffe3804b32",
    "Defaults": "6e8f564148736535a3b7ec0654640b5902ebeba265b9b687652fc663d1b4e8e0",
    "Empty": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "MultiNested": "6ca1dc2ea7541d0dbc32564da3dc5d665a6f039be45e69c2c02f54d80cc24684",
    "Nested": "2e2f065e9c62df54183f0626202c71cfdd9c3d2f16c685eefe2409cedfa064ab",
    "Strings": "76cdf6371e9d08fdb0d9599ae6b09952ce5be4c4159acb9f9f824dd78c015b09",
    "UnboundedSequences": "bc44a840e40f38d7d006511ff0ce951cfbf13f44ec8cb4c403cd633e5e624635",
    "WStrings": "654b938922545987f83f05b70077851ea515e40bfcd89dc393e7cdc1fc75b5c9",
}
CORPUS_RIHS01 = {  # rosidl_generator_c output (see module docstring)
    "Arrays": "8a321b80dae8c44dfd1ce558eaf1b1cd5ebbe5950863ed675836535511a7f91a",
    "BasicTypes": "7c300afd4e796798d49bdd6cdaa0fa87fa0ed2ba3217d977e1faa87070d797ab",
    "BoundedPlainSequences": "0670c010d33c1db2c5589ab5bbd208c551b5c72c88a76de80dfd0d2362255889",
    "BoundedSequences": "fb361a3b3827c76a142c2190126a20a92e7e510e047f880141a7e9ef867961ed",
    "Constants": "983e7ae7099d65b3030c31c2890b0ec2b332484fae9f28c68e01340c8f61edcf",
    "Defaults": "a725ee02bf25a224cb7d14015a0245b6654ff591ae1ac277e2a2673f013ea6d2",
    "Empty": "6587ceacfdb97a895b60774d021011c64f8c7299f53322404af4036dec6142dc",
    "MultiNested": "9ee9cbfb17c2df991a750b761a56def78674034977c829449820ca07efd9758b",
    "Nested": "f964f9dc322022b7a681ee6933ee5c3c788025b942fedb7f4d7c018ed840cf86",
    "Strings": "eee55533636293ac7c94c62432eedb5777eb849847d2a17b4dcead8c4a20ab32",
    "UnboundedSequences": "a63975514293a2c6b24a807675bcbd9180bda1995dd4ee10f2698d45ff77db05",
    "WStrings": "5a2c8ddb2054600023b9a180652f2ba895373217cad4b1f0fc1258c9e4424a79",
}


# ------------------------------------------------------------------------------------------- spec values
@pytest.mark.parametrize("distro", DISTROS)
@pytest.mark.parametrize("typename", sorted(SPEC_4) + sorted(SPEC_41_BOTH))
def test_spec_golden_values_both_distros(typename, distro):
    want = {**SPEC_4, **SPEC_41_BOTH}[typename]
    assert msgs.rihs01(typename, distro) == "RIHS01_" + want
    assert ts.typestore(distro).hash_rihs01(typename) == "RIHS01_" + want  # what rosbag2 metadata gets


@pytest.mark.parametrize("typename", sorted(SPEC_41_JAZZY))
def test_spec_41_char_rule_values_jazzy(typename):
    assert msgs.rihs01(typename, "jazzy") == "RIHS01_" + SPEC_41_JAZZY[typename]


def test_humble_gid_is_char24_and_hashed_as_uint8_array():
    desc = typehash.type_description(ts.typestore("humble").fielddefs, "rmw_dds_common/msg/Gid")
    assert desc["type_description"]["fields"] == [
        {"name": "data", "type": {"type_id": 3 + 48, "capacity": 24, "string_capacity": 0, "nested_type_name": ""}}]
    assert msgs.rihs01("rmw_dds_common/msg/Gid", "humble") != msgs.rihs01("rmw_dds_common/msg/Gid", "jazzy")


def _uses_char(store, name: str) -> bool:
    """Whether ``name`` or a type it references has a ``char`` field (walks the field descriptors)."""
    for _, (kind, arg) in store.fielddefs[name][1]:
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, arg = arg[0]
        if (kind == Nodetype.BASE and arg[0] == "char") or (kind == Nodetype.NAME and _uses_char(store, arg)):
            return True
    return False


@pytest.mark.parametrize("distro", DISTROS)
def test_char_is_the_only_divergence_from_rosbags(distro):
    """rosbags' own hash (char = 13) differs exactly for the types with a char field somewhere."""
    store = ts.typestore(distro)
    names = [n for n in store.fielddefs if "/msg/" in n]
    assert len(names) > 150
    diverging = set()
    for name in names:
        if Typestore.hash_rihs01(store, name) != msgs.rihs01(name, distro):
            diverging.add(name)
    assert diverging == {n for n in names if _uses_char(store, n)}
    assert {"std_msgs/msg/Char", "rmw_dds_common/msg/Gid", "rmw_dds_common/msg/ParticipantEntitiesInfo"} <= diverging


def test_char_maps_to_uint8_byte_to_byte(corpus):
    fields = typehash.type_description(ts.typestore("jazzy").fielddefs, "test_msgs/msg/BasicTypes")
    ids = {f["name"]: f["type"]["type_id"] for f in fields["type_description"]["fields"]}
    assert ids["char_value"] == 3 and ids["uint8_value"] == 3 and ids["byte_value"] == 16 and ids["bool_value"] == 15


def test_discovery_writer_advertises_the_ros2_hash():
    from latentstack.transport.dds import type_hash_user_data
    from latentstack.transport.discovery import DISCOVERY_TYPE

    assert type_hash_user_data(DISCOVERY_TYPE, "jazzy") == (
        b"typehash=RIHS01_91a0593bacdcc50ea9bdcf849a938b128412cc1ea821245c663bcd26f83c295e;")


def test_constants_do_not_enter_the_hash():
    # latentstack_msgs/ActionCommand has two uint8 constants; the description has no trace of them
    desc = typehash.type_description(ts.typestore("jazzy").fielddefs, "latentstack_msgs/msg/ActionCommand")
    assert "KIND_" not in repr(desc)
    assert [f["name"] for f in desc["type_description"]["fields"]] == ["header", "session", "sequence", "kind", "data"]
    # and test_msgs/Constants (constants only) hashes like rosidl's: see the corpus golden test


# ---------------------------------------------------------------------------------------- test_msgs corpus
@pytest.fixture(scope="module")
def corpus() -> list[str]:
    names = []
    for stem, sha in CORPUS_SHA256.items():
        text = (CORPUS_DIR / f"{stem}.msg").read_bytes()
        assert hashlib.sha256(text).hexdigest() == sha, stem
        names.append(f"test_msgs/msg/{stem}")
        msgs.register_msg(names[-1], text.decode())
    assert sorted(p.stem for p in CORPUS_DIR.glob("*.msg")) == sorted(CORPUS_SHA256)
    return names


@pytest.mark.parametrize("distro", DISTROS)
def test_corpus_registers_and_hashes_like_rosidl(corpus, distro):
    for name in corpus:
        want = "RIHS01_" + CORPUS_RIHS01[name.rsplit("/", 1)[1]]
        assert msgs.rihs01(name, distro) == want, name
        assert msgs.rihs01(name, distro) == want  # deterministic (no state between calls)


def test_corpus_hash_is_independent_of_registration_order(corpus):
    """A fresh store that registers the corpus in reverse order gives the same hashes."""
    from importlib import import_module

    from rosbags.typesys import Stores

    store = wstring.Ros2Typestore(import_module(f"rosbags.typesys.stores.{Stores.ROS2_JAZZY.value}"))
    for name in reversed(corpus):
        store.register(wstring.types_from_msg((CORPUS_DIR / f"{name.rsplit('/', 1)[1]}.msg").read_text(), name))
    for name in corpus:
        assert typehash.rihs01(store.fielddefs, name) == msgs.rihs01(name, "jazzy")


def _fill(store, desc, seed: list[int]):
    """A deterministic non-default value for a rosbags field descriptor (values exact in float32)."""
    seed[0] += 1
    k = seed[0]
    kind, arg = desc
    if kind == Nodetype.NAME:
        return store.types[arg](**{n: _fill(store, d, seed) for n, d in store.fielddefs[arg][1]})
    if kind == Nodetype.BASE:
        base, bound = arg
        if base == "string":
            return f"s{k}é"[: bound or None]
        if base == "wstring":
            return f"w{k}é𝄞ハ"[: bound or None]
        if base == "bool":
            return k % 2 == 1
        if base.startswith("float"):
            return k * 0.5 - 3.0
        return {"byte": -(k % 100), "int8": -(k % 100)}.get(base, k % 100)
    (sub, n) = arg
    length = n if kind == Nodetype.ARRAY else (n or 2)
    items = [_fill(store, sub, seed) for _ in range(length)]
    if sub[0] == Nodetype.BASE and sub[1][0] not in ("string", "wstring"):
        dtype = {"bool": np.bool_, "char": np.uint8, "byte": np.int8}.get(sub[1][0], sub[1][0])
        return np.array(items, dtype=dtype)
    return items


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(_same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("distro", DISTROS)
def test_corpus_cdr_round_trips_default_and_filled(corpus, distro):
    store = ts.typestore(distro)
    for name in corpus:
        filled = store.types[name](**{n: _fill(store, d, [0]) for n, d in store.fielddefs[name][1]})
        for msg in (msgs.new(name, distro), filled):
            data = msgs.encode(msg, name, distro)
            back = msgs.decode(data, name, distro)
            assert _same(back, msg), name
            assert msgs.encode(back, name, distro) == data, name
            # the interpreted codec of wstring.py and rosbags' generated code agree byte for byte
            assert wstring.serialize(store, msg, name) == data, name
            assert _same(wstring.deserialize(store, data, name), msg), name
            big = bytes(store.serialize_cdr(msg, name, little_endian=False))
            assert big[:2] == b"\x00\x00" and _same(msgs.decode(big, name, distro), msg), name


# ----------------------------------------------------------------------------------------------- wstring
def test_wstring_wire_bytes_cyclone_and_fastcdr2(corpus):
    m = msgs.new("test_msgs/msg/WStrings", "jazzy", wstring_value="hé𝄞", array_of_wstrings=["a", "ハ", ""],
                 unbounded_sequence_of_wstrings=["x"])
    # count of UTF-16 units, then each unit; U+1D11E is the surrogate pair D834 DD1E; no NUL terminator
    four = ("00010000" "04000000 68000000 e9000000 34d80000 1edd0000"
            "00000000 00000000 00000000"  # three empty wstrings
            "01000000 61000000" "01000000 cf300000" "00000000"  # wstring[3]
            "00000000"  # bounded sequence: empty
            "01000000 01000000 78000000")  # unbounded sequence ["x"]
    assert msgs.encode(m, distro="jazzy") == bytes.fromhex(four.replace(" ", ""))
    two = ("00010000" "04000000 6800 e900 34d8 1edd"
           "00000000 00000000 00000000"
           "01000000 6100 0000" "01000000 cf30 0000" "00000000"
           "00000000"
           "01000000 01000000 7800")
    store = ts.typestore("jazzy")
    data2 = wstring.serialize(store, m, "test_msgs/msg/WStrings", wchar_size=2)
    assert data2 == bytes.fromhex(two.replace(" ", ""))
    assert _same(wstring.deserialize(store, data2, "test_msgs/msg/WStrings", wchar_size=2), m)


def test_wstring_utf32_peer_and_malformed_bytes(corpus):
    name = "test_msgs/msg/WStrings"
    tail = "00000000" * 3 + "00000000" * 3 + "00000000" * 2
    # a peer writing UTF-32 code points (a 4-byte wchar_t filled from std::wstring) decodes too
    utf32 = bytes.fromhex("00010000" "02000000 68000000 1ed10100" + tail)
    assert msgs.decode(utf32, name, "jazzy").wstring_value == "h𝄞"
    with pytest.raises(msgs.MessageDecodeError):
        msgs.decode(bytes.fromhex("00010000" "ffffff00 68000000"), name, "jazzy")  # count beyond the buffer
    with pytest.raises(msgs.MessageDecodeError):
        msgs.decode(bytes.fromhex("00010000" "01000000 00001100" + tail), name, "jazzy")  # > U+10FFFF
    with pytest.raises(msgs.MessageDecodeError):
        msgs.decode(utf32[:-4], name, "jazzy")  # truncated


def test_bounded_wstring_hash_fields_and_definition_text():
    msgs.register_msg("latentstack_test_msgs/msg/BoundedW", "wstring<=22 a\nwstring<=5[<=3] b\nwstring[2] c\n")
    desc = typehash.type_description(ts.typestore("jazzy").fielddefs, "latentstack_test_msgs/msg/BoundedW")
    types = [f["type"] for f in desc["type_description"]["fields"]]
    assert [(t["type_id"], t["capacity"], t["string_capacity"]) for t in types] == [
        (22, 0, 22), (22 + 96, 3, 5), (18 + 48, 2, 0)]
    text = msgs.message_definition("latentstack_test_msgs/msg/BoundedW", "jazzy")
    assert text.splitlines() == ["wstring<=22 a", "wstring<=5[<=3] b", "wstring[2] c"]
    m = msgs.new("latentstack_test_msgs/msg/BoundedW", "jazzy", a="añ", b=["x"], c=["", "y"])
    back = msgs.decode(msgs.encode(m, distro="jazzy"), "latentstack_test_msgs/msg/BoundedW", "jazzy")
    assert (back.a, back.b, back.c) == ("añ", ["x"], ["", "y"])


def test_type_with_nested_wstring_type_round_trips(corpus):
    msgs.register_msg("latentstack_test_msgs/msg/HoldsW", "std_msgs/Header h\ntest_msgs/WStrings[] w\nfloat64 x\n")
    assert wstring.has_wstring(ts.typestore("jazzy").fielddefs, "latentstack_test_msgs/msg/HoldsW")
    inner = msgs.new("test_msgs/msg/WStrings", "jazzy", wstring_value="ü")
    m = msgs.new("latentstack_test_msgs/msg/HoldsW", "jazzy", w=[inner, inner], x=2.5)
    back = msgs.decode(msgs.encode(m, distro="jazzy"), "latentstack_test_msgs/msg/HoldsW", "jazzy")
    assert _same(back, m)


# ----------------------------------------------------------------------------------------------- services
ADD_TWO_INTS = "RIHS01_e118de6bf5eeb66a2491b5bda11202e7b68f198d6f67922cf30364858239c81a"  # ros2.md section 2


def test_service_hash_golden_and_it_needs_the_char_rule():
    from latentstack.msgs.typestore import service_rihs01

    msgs.register_msg("example_interfaces/srv/AddTwoInts_Request", "int64 a\nint64 b\n")
    msgs.register_msg("example_interfaces/srv/AddTwoInts_Response", "int64 sum\n")
    store = ts.typestore("jazzy")
    assert {"example_interfaces/srv/AddTwoInts_Request", "example_interfaces/srv/AddTwoInts_Response"} <= set(
        store.fielddefs)  # filed under srv/, not rosbags' srv/msg/
    assert service_rihs01("example_interfaces/srv/AddTwoInts", "jazzy") == ADD_TWO_INTS
    desc = typehash.service_type_description(store.fielddefs, "example_interfaces/srv/AddTwoInts")
    assert [r["type_name"] for r in desc["referenced_type_descriptions"]] == [
        "builtin_interfaces/msg/Time", "example_interfaces/srv/AddTwoInts_Event",
        "example_interfaces/srv/AddTwoInts_Request", "example_interfaces/srv/AddTwoInts_Response",
        "service_msgs/msg/ServiceEventInfo"]
    # every service embeds ServiceEventInfo (char client_gid[16]): with rosbags' char = 13 the hash is wrong
    info = next(r for r in desc["referenced_type_descriptions"] if r["type_name"].endswith("ServiceEventInfo"))
    gid = next(f for f in info["fields"] if f["name"] == "client_gid")
    assert gid["type"]["type_id"] == 3 + 48
    gid["type"]["type_id"] = 13 + 48
    assert typehash.hash_type_description(desc) != ADD_TWO_INTS
