"""TFRecord + tf.train.Example without TensorFlow: checked against known CRCs and protobuf's own decoder."""
from __future__ import annotations

import numpy as np
import pytest

from cxrdistill.teachers.tfrecord import (TFRecordError, crc32c, decode_example, encode_example, iter_records,
                                          masked_crc, write_records)


def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert crc32c(bytes(range(32))) == 0x46DD794E  # RFC 3720 B.4: 0x00..0x1F


def _example_classes():
    """tf.train.Example built from a FileDescriptorProto with protobuf's generic machinery (no TensorFlow)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="example_test.proto", package="tftest", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto

    def msg(name, fields, nested=()):
        m = f.message_type.add(name=name) if not isinstance(name, descriptor_pb2.DescriptorProto) else name
        for fname, num, ftype, label, tname, oneof in fields:
            fd = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                fd.type_name = tname
            if oneof is not None:
                fd.oneof_index = oneof
        return m

    R, O = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    msg("BytesList", [("value", 1, F.TYPE_BYTES, R, None, None)])
    msg("FloatList", [("value", 1, F.TYPE_FLOAT, R, None, None)])
    msg("Int64List", [("value", 1, F.TYPE_INT64, R, None, None)])
    feat = msg("Feature", [("bytes_list", 1, F.TYPE_MESSAGE, O, ".tftest.BytesList", 0),
                           ("float_list", 2, F.TYPE_MESSAGE, O, ".tftest.FloatList", 0),
                           ("int64_list", 3, F.TYPE_MESSAGE, O, ".tftest.Int64List", 0)])
    feat.oneof_decl.add(name="kind")
    feats = f.message_type.add(name="Features")
    entry = feats.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=O)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=O, type_name=".tftest.Feature")
    feats.field.add(name="feature", number=1, type=F.TYPE_MESSAGE, label=R, type_name=".tftest.Features.FeatureEntry")
    msg("Example", [("features", 1, F.TYPE_MESSAGE, O, ".tftest.Features", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tftest.Example"))


def test_example_roundtrip_and_protobuf_crosscheck():
    Example = _example_classes()
    emb = np.random.default_rng(0).standard_normal(1376).astype(np.float32)
    ours = encode_example({"embedding": emb, "image_id": b"p1/s1/v1", "embedding/shape": np.array([1376, -3])})
    # protobuf parses what we wrote …
    ex = Example()
    ex.ParseFromString(ours)
    assert np.array_equal(np.array(ex.features.feature["embedding"].float_list.value, np.float32), emb)
    assert list(ex.features.feature["image_id"].bytes_list.value) == [b"p1/s1/v1"]
    assert list(ex.features.feature["embedding/shape"].int64_list.value) == [1376, -3]
    # … and we parse what protobuf wrote.
    ex2 = Example()
    ex2.features.feature["embedding"].float_list.value.extend(emb.tolist())
    ex2.features.feature["image_id"].bytes_list.value.append("ü".encode())
    ex2.features.feature["n"].int64_list.value.extend([0, 1, -1, 2**40])
    d = decode_example(ex2.SerializeToString())
    assert np.array_equal(d["embedding"], emb)
    assert d["image_id"] == ["ü".encode()] and d["n"].tolist() == [0, 1, -1, 2**40]


def test_unpacked_floats_and_unknown_fields():
    # FloatList with unpacked (wire type 5) values and an unknown varint field 9 in Example: both must be handled.
    import struct

    def ld(fn, b):
        return bytes([(fn << 3) | 2, len(b)]) + b
    floats = b"".join(bytes([(1 << 3) | 5]) + struct.pack("<f", v) for v in (1.5, -2.0))
    feat = ld(2, floats)
    entry = ld(1, b"emb") + ld(2, feat)
    data = ld(1, ld(1, entry)) + bytes([(9 << 3) | 0, 0x96, 0x01])
    assert decode_example(data)["emb"].tolist() == [1.5, -2.0]
    with pytest.raises(TFRecordError):
        decode_example(ld(1, ld(1, entry))[:-3])


def test_record_framing(tmp_path):
    recs = [encode_example({"embedding": np.arange(k + 1, dtype=np.float32)}) for k in range(3)]
    write_records(tmp_path / "a.tfrecord", recs)
    assert list(iter_records(tmp_path / "a.tfrecord", check_crc=True)) == recs
    raw = bytearray((tmp_path / "a.tfrecord").read_bytes())
    assert int.from_bytes(raw[8:12], "little") == masked_crc(raw[:8])
    raw[20] ^= 0x01
    (tmp_path / "b.tfrecord").write_bytes(bytes(raw))
    assert len(list(iter_records(tmp_path / "b.tfrecord"))) == 3  # data CRC not checked by default
    with pytest.raises(TFRecordError, match="data checksum"):
        list(iter_records(tmp_path / "b.tfrecord", check_crc=True))
    (tmp_path / "c.tfrecord").write_bytes(bytes(raw[:30]))
    with pytest.raises(TFRecordError, match="truncated"):
        list(iter_records(tmp_path / "c.tfrecord"))
    (tmp_path / "d.tfrecord").write_bytes(b"definitely not a tfrecord file")
    with pytest.raises(TFRecordError, match="length checksum"):
        list(iter_records(tmp_path / "d.tfrecord"))
