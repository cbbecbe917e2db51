import Foundation
import RosterRPC

/// Random values of the fixture messages, biased towards edge cases: zero,
/// minimum and maximum integers, NaN and -0.0, empty and non-ASCII strings,
/// long repeated fields, nested and recursive messages.
struct RandomValues {
    var rng: SplitMix64
    /// NaN never equals itself, so tests that compare with == turn it off.
    var allowNaN = true
    /// Now and then make a repeated field hundreds of elements long.
    var longArrays = true

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func chance(_ oneIn: Int) -> Bool { Int.random(in: 0..<oneIn, using: &rng) == 0 }

    mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        switch Int.random(in: 0..<8, using: &rng) {
        case 0: return 0
        case 1: return .min
        case 2: return .max
        case 3: return T(truncatingIfNeeded: Int.random(in: -300...300, using: &rng))
        case 4: return T.min &+ 1
        default: return T(truncatingIfNeeded: rng.next())
        }
    }

    mutating func bool() -> Bool { chance(2) }

    mutating func float() -> Float {
        switch Int.random(in: 0..<8, using: &rng) {
        case 0: return 0
        case 1: return -0.0
        case 2: return allowNaN ? .nan : 1
        case 3: return .infinity
        case 4: return -.greatestFiniteMagnitude
        case 5: return .leastNonzeroMagnitude
        default: return Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & (allowNaN ? .max : 0xBF7F_FFFF))
        }
    }

    mutating func double() -> Double {
        switch Int.random(in: 0..<8, using: &rng) {
        case 0: return 0
        case 1: return -0.0
        case 2: return allowNaN ? Double(bitPattern: 0x7FF8_0000_0000_0000 | (rng.next() & 0xFFFF)) : 2
        case 3: return -.infinity
        case 4: return .greatestFiniteMagnitude
        case 5: return -.leastNonzeroMagnitude
        default: return Double(bitPattern: rng.next() & (allowNaN ? .max : 0xBFEF_FFFF_FFFF_FFFF))
        }
    }

    mutating func string() -> String {
        let pool: [String] = ["", "a", "hello", "ünïcödé", "✓", "😀 emoji", "\u{0}", "line\nbreak", "日本語", "x"]
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: return pool[Int.random(in: 0..<pool.count, using: &rng)]
        case 1: return String(repeating: pool[Int.random(in: 0..<pool.count, using: &rng)], count: Int.random(in: 0...50, using: &rng))
        default:
            let count = Int.random(in: 0...12, using: &rng)
            var scalars = String.UnicodeScalarView()
            for _ in 0..<count {
                let v = UInt32.random(in: 0...0x10FFFF, using: &rng)
                scalars.append(Unicode.Scalar(v) ?? "?")
            }
            return String(scalars)
        }
    }

    mutating func bytes() -> Data {
        let count = chance(4) ? 0 : Int.random(in: 0...64, using: &rng)
        return Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) })
    }

    /// A named case, or now and then a number the schema does not name.
    mutating func enumValue<E: ProtoEnum>(_: E.Type = E.self) -> E {
        let named = Array(E.allCases)
        if chance(6) {
            let raw: Int32 = integer()
            let value = E(rawValue: raw)
            if !named.contains(value) { return value }
        }
        return named[Int.random(in: 0..<named.count, using: &rng)]
    }

    mutating func color() -> Color { enumValue() }

    mutating func kind() -> Document.Kind { enumValue() }

    mutating func array<T>(max: Int = 8, _ make: (inout RandomValues) -> T) -> [T] {
        let count = longArrays && chance(10) ? Int.random(in: 100...600, using: &rng) : Int.random(in: 0...max, using: &rng)
        var out: [T] = []
        for _ in 0..<count { out.append(make(&self)) }
        return out
    }

    mutating func dictionary<K: Hashable, V>(_ key: (inout RandomValues) -> K, _ value: (inout RandomValues) -> V) -> [K: V] {
        var out: [K: V] = [:]
        for _ in 0..<Int.random(in: 0...6, using: &rng) { out[key(&self)] = value(&self) }
        return out
    }

    mutating func scalars() -> Scalars {
        Scalars(flag: bool(), i32: integer(), i64: integer(), u32: integer(), u64: integer(), s32: integer(),
                s64: integer(), f32: integer(), f64: integer(), sf32: integer(), sf64: integer(),
                real32: float(), real64: double(), text: string(), blob: bytes(), color: color())
    }

    mutating func repeats() -> Repeats {
        Repeats(flags: array { $0.bool() }, i32s: array { $0.integer() }, i64s: array { $0.integer() },
                u32s: array { $0.integer() }, u64s: array { $0.integer() }, s32s: array { $0.integer() },
                s64s: array { $0.integer() }, f32s: array { $0.integer() }, f64s: array { $0.integer() },
                sf32s: array { $0.integer() }, sf64s: array { $0.integer() }, real32s: array { $0.float() },
                real64s: array { $0.double() }, texts: array(max: 4) { $0.string() }, blobs: array(max: 4) { $0.bytes() },
                colors: array { $0.color() })
    }

    mutating func optionals() -> Optionals {
        Optionals(maybeInt: chance(2) ? integer() : nil, maybeText: chance(2) ? string() : nil,
                  maybeColor: chance(2) ? color() : nil, maybeReal: chance(2) ? double() : nil,
                  maybeFlag: chance(2) ? bool() : nil, maybeBlob: chance(2) ? bytes() : nil)
    }

    mutating func paragraph() -> Document.Section.Paragraph {
        Document.Section.Paragraph(body: string(), kind: kind())
    }

    mutating func section() -> Document.Section {
        Document.Section(title: string(), paragraphs: array(max: 3) { $0.paragraph() })
    }

    mutating func document() -> Document {
        var d = Document()
        d.documentID = string()
        d.scalars = chance(3) ? nil : scalars()
        d.sections = array(max: 3) { $0.section() }
        d.counters = dictionary({ $0.string() }, { $0.integer() })
        d.sectionsByNumber = dictionary({ $0.integer() }, { $0.section() })
        d.flags = dictionary({ $0.bool() }, { $0.string() })
        d.colors = dictionary({ $0.integer() }, { $0.color() })
        d.blobs = dictionary({ $0.integer() }, { $0.bytes() })
        d.kind = kind()
        d.lead = chance(2) ? paragraph() : nil
        d.repeats = chance(3) ? nil : repeats()
        d.optionals = chance(3) ? nil : optionals()
        d.maxNumbered = integer()
        return d
    }

    mutating func tree(depth: Int = 0) -> Tree {
        Tree(label: string(), children: depth > 4 ? [] : (0..<Int.random(in: 0...3, using: &rng)).map { _ in tree(depth: depth + 1) })
    }
}
