import RosterAPI
import RosterRPC
import SegmentStore

/// `Match` without a message: the request read in place, the answer written
/// straight into the send buffer.
///
/// A single `Match` is about a microsecond of server work, and the general
/// path spent much of it on things a 16-byte lookup does not need: a
/// `MatchRequest` with a heap-allocated `Data` for the hash, a generic
/// UTF-8 validation of the advertiser id, and a `MatchResponse` encoded
/// through its message type. Every client (ours, the Python one, protoc's)
/// encodes the request the same way: field 1, then field 2, nothing else.
/// That shape is read here; anything else (fields reordered or repeated,
/// unknown fields, a non-ASCII or 128-byte-plus id, a hash that is neither
/// 16 nor 32 bytes) takes the general decoder, so every valid encoding still gets the
/// same answer and every invalid one the same error.
extension MatchHandler {
    public var methods: [RPCServerMethod] {
        [
            RPCServerMethod(MatchService.Method.match, body: .inline { bytes, context, sink in
                try self.answerMatch(bytes, context: context, sink: sink)
            }),
            .inline(MatchService.Method.matchMany) { try self.matchMany($0, context: $1) },
            .inline(MatchService.Method.matchAdvertisers) { try self.matchAdvertisers($0, context: $1) },
        ]
    }

    @inline(__always)
    func answerMatch(_ bytes: UnsafeRawBufferPointer, context: RPCContext, sink: RPCServerMethod.ResponseSink) throws {
        guard let request = MatchRequestView(bytes) else {
            let response = try match(try MatchRequest(decoding: bytes), context: context)
            MatchResponseWriter.write(matched: response.matched, version: response.version, to: sink)
            return
        }
        let list = try list(String(decoding: request.advertiser, as: UTF8.self))
        try Self.check(width: request.width, of: list)
        MatchResponseWriter.write(matched: list.contains(request.key), version: list.version, to: sink)
    }
}

/// A `MatchRequest` in its canonical encoding, seen in the request's bytes:
/// `0A len id… 12 width hash×width`, with `len` 1…127, the id ASCII and
/// `width` 16 (MD5) or 32 (SHA-256).
struct MatchRequestView {
    /// The advertiser id's bytes (ASCII), valid while the request's are.
    let advertiser: UnsafeBufferPointer<UInt8>
    /// The hash's first 16 bytes: its key (`HashKind`).
    let key: Key16
    /// The hash's width in bytes.
    let width: Int

    @inline(__always)
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= 21, let base = bytes.baseAddress, bytes[0] == 0x0A else { return nil }
        let length = Int(bytes[1])
        guard length > 0, length < 0x80, bytes.count >= 4 + length, bytes[2 + length] == 0x12 else { return nil }
        let width = Int(bytes[3 + length])
        guard width == 16 || width == 32, bytes.count == 4 + length + width else { return nil }
        self.width = width
        let id = UnsafeBufferPointer(start: (base + 2).assumingMemoryBound(to: UInt8.self), count: length)
        guard ProtoWire.isASCII(id) else { return nil }
        advertiser = id
        key = Key16(base + 4 + length)
    }
}

/// Writes a `MatchResponse` as its generated encoder would (proto3: a false
/// `matched` and a zero `version` are left out), without building one.
enum MatchResponseWriter {
    @inline(__always)
    static func size(matched: Bool, version: UInt64) -> Int {
        (matched ? 2 : 0) + (version == 0 ? 0 : 1 + ProtoWire.varintSize(version))
    }

    @inline(__always)
    static func write(matched: Bool, version: UInt64, to sink: RPCServerMethod.ResponseSink) {
        sink(size(matched: matched, version: version)) { out in
            var i = 0
            if matched {
                out[0] = 0x08 // field 1, varint
                out[1] = 1
                i = 2
            }
            guard version != 0 else { return }
            out[i] = 0x10 // field 2, varint
            i += 1
            var v = version
            while v >= 0x80 {
                out[i] = UInt8(truncatingIfNeeded: v) | 0x80
                v >>= 7
                i += 1
            }
            out[i] = UInt8(v)
        }
    }
}
