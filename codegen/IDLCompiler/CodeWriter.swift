/// Accumulates indented source text.
struct CodeWriter {
    private(set) var text = ""
    private var level = 0
    private let unit: String

    init(indent: String = "    ") { unit = indent }

    mutating func line(_ s: String = "") {
        if s.isEmpty {
            text += "\n"
        } else {
            text += String(repeating: unit, count: level) + s + "\n"
        }
    }

    /// Writes `header {`, the body one level deeper, then `}`.
    mutating func block(_ header: String, closing: String = "}", _ body: (inout CodeWriter) -> Void) {
        line(header + " {")
        level += 1
        body(&self)
        level -= 1
        line(closing)
    }

    /// Writes a `switch` with its cases at the switch's own level, as Swift style has it.
    mutating func switchBlock(_ subject: String, _ body: (inout CodeWriter) -> Void) {
        line("switch \(subject) {")
        body(&self)
        line("}")
    }

    /// Opens a block that a later `close()` ends; for bodies that call back
    /// into the emitter, which a closure could not do while it holds the writer.
    mutating func open(_ header: String) {
        line(header + " {")
        level += 1
    }

    mutating func close(_ closing: String = "}") {
        level -= 1
        line(closing)
    }

    mutating func indent(_ body: (inout CodeWriter) -> Void) {
        level += 1
        body(&self)
        level -= 1
    }

    /// Doc comment lines with the given prefix (`///` or `//`).
    mutating func doc(_ lines: [String], prefix: String = "///") {
        for l in lines { line(l.isEmpty ? prefix : "\(prefix) \(l)") }
    }
}
