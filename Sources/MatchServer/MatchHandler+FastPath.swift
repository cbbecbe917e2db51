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
            }, run: { requests, context, answer, fail in
                self.answerMatchRun(requests, context: context, answer: answer, fail: fail)
            }),
            RPCServerMethod(MatchService.Method.matchMany, body: .inline { bytes, context, sink in
                try self.answerMatchMany(bytes, context: context, sink: sink)
            }),
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

extension MatchHandler {
    /// A run of `Match` calls that came together (`RPCServerMethod.InlineRunBody`).
    ///
    /// A client pipelining single lookups sends one advertiser's requests in
    /// a row, each in the canonical encoding and the same shape. Such a run
    /// is answered as a `MatchMany` would be: the list resolved once, the
    /// keys looked up by the batch pipeline (their cache misses overlapped
    /// rather than paid one after another), the answers written as each
    /// call's own. Any other run (mixed advertisers or widths, an encoding
    /// read by the general decoder, a list that is missing or of the other
    /// hash type) is answered call by call by `answerMatch`, so every call
    /// gets the answer or the error it would get alone.
    func answerMatchRun(_ requests: UnsafeBufferPointer<UnsafeRawBufferPointer>, context: RPCContext,
                        answer: RPCServerMethod.ResponseSink, fail: (any Error) -> Void) {
        let count = requests.count
        guard count > 1 else {
            return answerMatchAlone(requests[0], context: context, answer: answer, fail: fail)
        }
        guard let (list, keyOffset) = sharedList(requests) else {
            return answerMixedRun(requests, context: context, answer: answer, fail: fail)
        }
        let bitmapBytes = (count + 7) / 8
        withUnsafeTemporaryAllocation(byteCount: count * 16 + bitmapBytes, alignment: 16) { space in
            let keys = space.baseAddress!
            for (i, request) in requests.enumerated() {
                (keys + i * 16).copyMemory(from: request.baseAddress! + keyOffset, byteCount: 16)
            }
            let bitmap = (keys + count * 16).bindMemory(to: UInt8.self, capacity: bitmapBytes)
            bitmap.initialize(repeating: 0, count: bitmapBytes)
            list.lookup(keys, count: count, into: bitmap)
            for i in 0..<count {
                MatchResponseWriter.write(matched: bitmap[i >> 3] & (1 << (i & 7)) != 0, version: list.version, to: answer)
            }
        }
    }

    /// A run that names several advertisers (one user asked of many lists,
    /// say): each call's list resolved (the previous call's again when it
    /// names the same advertiser) and the lookups taken as
    /// `MatchAdvertisers` takes them, 16 at a time with their cache misses
    /// overlapped. A call read by the general decoder, or whose list is
    /// missing or of the other hash type, is answered alone in its place.
    private func answerMixedRun(_ requests: UnsafeBufferPointer<UnsafeRawBufferPointer>, context: RPCContext,
                                answer: RPCServerMethod.ResponseSink, fail: (any Error) -> Void) {
        var pairs = [(ListVersion, Key16)?](repeating: nil, count: requests.count)
        var previous: (id: UnsafeBufferPointer<UInt8>, list: ListVersion)?
        for (i, request) in requests.enumerated() {
            guard let view = MatchRequestView(request) else { continue }
            let list: ListVersion
            if let previous, previous.id.count == view.advertiser.count,
               ProtoWire.sameBytes(previous.id.baseAddress!, view.advertiser.baseAddress!, count: view.advertiser.count) {
                list = previous.list
            } else {
                guard let found = try? self.list(String(decoding: view.advertiser, as: UTF8.self)) else { continue }
                list = found
                previous = (view.advertiser, found)
            }
            guard view.width == list.hashKind.byteCount else { continue }
            pairs[i] = (list, view.key)
        }
        let bitmapBytes = (requests.count + 7) / 8
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: bitmapBytes) { bitmap in
            bitmap.initialize(repeating: 0)
            Self.lookUp(requests.count, into: bitmap.baseAddress!) { pairs[$0] }
            for (i, pair) in pairs.enumerated() {
                guard let (list, _) = pair else {
                    answerMatchAlone(requests[i], context: context, answer: answer, fail: fail)
                    continue
                }
                MatchResponseWriter.write(matched: bitmap[i >> 3] & (1 << (i & 7)) != 0, version: list.version, to: answer)
            }
        }
    }

    /// One call of a run answered as if it came alone (`answerMatch`).
    private func answerMatchAlone(_ request: UnsafeRawBufferPointer, context: RPCContext,
                                  answer: RPCServerMethod.ResponseSink, fail: (any Error) -> Void) {
        do { try answerMatch(request, context: context, sink: answer) } catch { fail(error) }
    }

    /// The list every request of the run names, and where each request's
    /// key starts, if all are canonical with the same advertiser and hash
    /// width and that advertiser's list is served with that width; nil
    /// otherwise. A request with the first's bytes up to its hash and the
    /// first's length is canonical as the first is: its prefix says so.
    private func sharedList(_ requests: UnsafeBufferPointer<UnsafeRawBufferPointer>) -> (ListVersion, Int)? {
        guard let first = MatchRequestView(requests[0]) else { return nil }
        let keyOffset = 4 + first.advertiser.count // 0A len id… 12 width
        let prefix = requests[0].baseAddress!
        let size = requests[0].count
        for request in requests.dropFirst() {
            guard request.count == size, ProtoWire.sameBytes(request.baseAddress!, prefix, count: keyOffset) else { return nil }
        }
        guard let list = try? list(String(decoding: first.advertiser, as: UTF8.self)),
              first.width == list.hashKind.byteCount else { return nil }
        return (list, keyOffset)
    }
}

extension MatchHandler {
    /// `MatchMany` without messages: the hashes looked up where they lie in
    /// the request, the bitmap built on the stack (up to 16 KiB; the heap
    /// past that) and the response written straight into the send buffer.
    /// A batch of 100 is a few microseconds of lookups, and the general
    /// path added a copy of the hashes, a bitmap `Data` and a message to
    /// encode to each. Any other encoding takes the general decoder.
    func answerMatchMany(_ bytes: UnsafeRawBufferPointer, context: RPCContext, sink: RPCServerMethod.ResponseSink) throws {
        guard let request = MatchManyRequestView(bytes) else {
            let response = try matchMany(try MatchManyRequest(decoding: bytes), context: context)
            response.matched.withUnsafeBytes { bitmap in
                MatchManyResponseWriter.write(bitmap: bitmap, count: Int(response.count), matched: Int(response.matchedCount),
                                              version: response.version, to: sink)
            }
            return
        }
        let (list, width, count) = try matchManyTarget(advertiser: String(decoding: request.advertiser, as: UTF8.self),
                                                       bytes: request.hashes.count, hashType: request.hashType)
        let bytes = (count + 7) / 8
        func answer(_ bitmap: UnsafeMutableBufferPointer<UInt8>) {
            bitmap.initialize(repeating: 0)
            if count > 0 { Self.lookUp(request.hashes.baseAddress!, width: width, count: count, in: list, into: bitmap.baseAddress!) }
            let matched = bitmap.reduce(0) { $0 + $1.nonzeroBitCount }
            MatchManyResponseWriter.write(bitmap: UnsafeRawBufferPointer(bitmap), count: count, matched: matched, version: list.version, to: sink)
        }
        if bytes <= 16 << 10 {
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, bytes)) { answer(UnsafeMutableBufferPointer(rebasing: $0[..<bytes])) }
        } else {
            let bitmap = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes)
            defer { bitmap.deallocate() }
            answer(bitmap)
        }
    }
}

/// A `MatchManyRequest` in its canonical encoding, seen in the request's
/// bytes: `0A len id… 12 varint(n) hashes…`, then optionally `18 type`
/// (1 or 2), with `len` 1…127 and the id ASCII. Nothing else may follow.
struct MatchManyRequestView {
    let advertiser: UnsafeBufferPointer<UInt8>
    let hashes: UnsafeRawBufferPointer
    let hashType: HashType

    @inline(__always)
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard let (id, next) = CanonicalWire.advertiser(bytes), let base = bytes.baseAddress else { return nil }
        // The hashes' length: a varint of at most 4 bytes (under 2^28).
        var i = next
        var n = 0
        var shift = 0
        while true {
            guard i < bytes.count, shift < 28 else { return nil }
            let byte = bytes[i]
            n |= Int(byte & 0x7F) << shift
            i += 1
            if byte < 0x80 { break }
            shift += 7
        }
        guard n > 0, bytes.count - i >= n else { return nil }
        hashes = UnsafeRawBufferPointer(start: base + i, count: n)
        i += n
        if i == bytes.count {
            hashType = .unspecified
        } else {
            guard bytes.count == i + 2, bytes[i] == 0x18, bytes[i + 1] == 1 || bytes[i + 1] == 2 else { return nil }
            hashType = HashType(rawValue: Int32(bytes[i + 1]))
        }
        advertiser = id
    }
}

/// Writes a `MatchManyResponse` as its generated encoder would (proto3:
/// empty and zero fields left out), without building one.
enum MatchManyResponseWriter {
    @inline(__always)
    static func write(bitmap: UnsafeRawBufferPointer, count: Int, matched: Int, version: UInt64, to sink: RPCServerMethod.ResponseSink) {
        func field(_ value: UInt64) -> Int { value == 0 ? 0 : 1 + ProtoWire.varintSize(value) }
        let size = (bitmap.isEmpty ? 0 : 1 + ProtoWire.varintSize(UInt64(bitmap.count)) + bitmap.count)
            + field(UInt64(count)) + field(UInt64(matched)) + field(version)
        sink(size) { out in
            var i = 0
            if !bitmap.isEmpty {
                out[i] = 0x0A // field 1, bytes
                i += 1
                CanonicalWire.writeVarint(UInt64(bitmap.count), to: out, at: &i)
                UnsafeMutableRawBufferPointer(rebasing: out[i..<(i + bitmap.count)]).copyMemory(from: bitmap)
                i += bitmap.count
            }
            func field(_ tag: UInt8, _ value: UInt64) {
                guard value != 0 else { return }
                out[i] = tag
                i += 1
                CanonicalWire.writeVarint(value, to: out, at: &i)
            }
            field(0x10, UInt64(count)) // field 2, varint
            field(0x18, UInt64(matched)) // field 3
            field(0x20, version) // field 4
        }
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
        guard let (id, next) = CanonicalWire.advertiser(bytes), let base = bytes.baseAddress, next < bytes.count else { return nil }
        let width = Int(bytes[next])
        guard width == 16 || width == 32, bytes.count == next + 1 + width else { return nil }
        self.width = width
        advertiser = id
        key = Key16(base + next + 1)
    }
}

/// What the in-place readers and writers share: the canonical start of a
/// `MatchRequest` or `MatchManyRequest`, and varints written into a reply.
enum CanonicalWire {
    /// The leading `0A len id…` (`len` 1…127, the id ASCII) and the `12`
    /// key of field 2 after it: the id, and where field 2's length starts.
    @inline(__always)
    static func advertiser(_ bytes: UnsafeRawBufferPointer) -> (id: UnsafeBufferPointer<UInt8>, next: Int)? {
        guard bytes.count >= 4, let base = bytes.baseAddress, bytes[0] == 0x0A else { return nil }
        let length = Int(bytes[1])
        guard length > 0, length < 0x80, bytes.count >= 3 + length, bytes[2 + length] == 0x12 else { return nil }
        let id = UnsafeBufferPointer(start: (base + 2).assumingMemoryBound(to: UInt8.self), count: length)
        guard ProtoWire.isASCII(id) else { return nil }
        return (id, 3 + length)
    }

    /// Writes `value` as a varint at `out[i...]`, moving `i` past it.
    @inline(__always)
    static func writeVarint(_ value: UInt64, to out: UnsafeMutableRawBufferPointer, at i: inout Int) {
        var v = value
        while v >= 0x80 {
            out[i] = UInt8(truncatingIfNeeded: v) | 0x80
            v >>= 7
            i += 1
        }
        out[i] = UInt8(v)
        i += 1
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
            CanonicalWire.writeVarint(version, to: out, at: &i)
        }
    }
}
