import Foundation
import RosterRPC

/// The canonical value both sides of the interop test build: this Swift code
/// and `encode()` in Tests/Interop/interop_check.c. Change them together.
enum InteropFixture {
    static let nanBits: UInt64 = 0x7FF8_0000_0000_0001

    static var document: Document {
        var d = Document()
        d.documentID = "doc-42 ✓ ü"
        d.scalars = Scalars(
            flag: true, i32: -1, i64: .min, u32: .max, u64: .max, s32: .min, s64: -2,
            f32: 0xDEAD_BEEF, f64: 0x0123_4567_89AB_CDEF, sf32: -123_456, sf64: .min + 1,
            real32: Float(bitPattern: 0x8000_0001), real64: 3.141592653589793,
            text: "hello", blob: Data([0x00, 0xFF, 0x10]), color: .blue)
        d.sections = [
            Document.Section(title: "A", paragraphs: [
                Document.Section.Paragraph(body: "p1", kind: .quote),
                Document.Section.Paragraph(body: "", kind: .plain),
            ]),
            Document.Section(),
        ]
        d.counters = ["a": 1, "b": -1]
        d.sectionsByNumber = [1: Document.Section(title: "S1"), -5: Document.Section()]
        d.flags = [true: "yes", false: "no"]
        d.colors = [7: .red, 0: .green]
        d.blobs = [-1: Data([0x01]), 2: Data()]
        d.kind = .quote
        d.lead = Document.Section.Paragraph(body: "lead", kind: .plain)
        d.repeats = Repeats(
            flags: [true, false, true], i32s: [0, -1, .max], i64s: [.min, 5], u32s: [0, .max], u64s: [.max],
            s32s: [-1, 1, .min], s64s: [.min, .max], f32s: [1, 2], f64s: [.max], sf32s: [-7], sf64s: [-8],
            real32s: [1.5, -0.0], real64s: [Double(bitPattern: nanBits), -.infinity],
            texts: ["x", "", "ÿ"], blobs: [Data(), Data([1, 2])], colors: [.red, .blue, .unrecognized(99)])
        d.optionals = Optionals(maybeInt: 0, maybeText: "", maybeColor: .unspecified, maybeReal: nil,
                                maybeFlag: false, maybeBlob: nil)
        d.maxNumbered = 7
        return d
    }
}
