import IDLCompiler
import XCTest

/// Each diagnostic the compiler gives: its message and its position.
final class DiagnosticTests: XCTestCase {
    /// Compiles `body` after a package line and returns the diagnostics as
    /// `line:col: message`, so that positions are part of every assertion.
    private func errors(_ body: String, file: String = "t.rdl") -> [String] {
        let text = "package t.v1;\n" + body
        switch IDLCompiler.check([(file, text)]) {
        case .success: return []
        case .failure(let failure):
            return failure.diagnostics.map { "\($0.location.line):\($0.location.column): \($0.message)" }
        }
    }

    private func assertErrors(_ body: String, _ expected: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(errors(body), expected, file: file, line: line)
    }

    func testValidSchemaHasNoErrors() {
        assertErrors("""
            message A { int32 x = 1; B b = 2; map<string, B> m = 3; message C {} }
            message B { repeated A.C cs = 1; optional B.E e = 2; enum E { E_Z = 0; } }
            service S = 1 { rpc Get(A) returns (B) = 1; }
            """, [])
        assertErrors("extend A {}", ["2:1: unexpected 'extend'; expected 'package', 'message', 'enum' or 'service'"])
        assertErrors("message A {}\nservice S = 1 inline { rpc Get(A) returns (A) = 1; }", [])
        assertErrors("message A {}\nservice S = 1 fast { rpc Get(A) returns (A) = 1; }",
                     ["3:15: unexpected 'fast'; expected 'inline' or '{' after the id of service 'S'"])
    }

    /// Files that use each other's types would emit `.proto` files that
    /// import each other, which protoc refuses: the compiler refuses them
    /// first, once per cycle, at the use that closes it (`file:line:col`).
    func testFilesThatImportEachOtherAreRefused() {
        func check(_ files: [(String, String)]) -> [String] {
            switch IDLCompiler.check(files.map { (path: $0.0, text: "package t.v1;\n" + $0.1) }) {
            case .success: return []
            case .failure(let failure): return failure.diagnostics.map(\.description)
            }
        }
        XCTAssertEqual(check([("a.rdl", "message A { B b = 1; }"), ("b.rdl", "message B {\n  A a = 1;\n}")]), [
            "a.rdl:2:13: error: schema files import each other in a cycle (a.rdl → b.rdl → a.rdl): protoc refuses a .proto that imports itself; "
                + "move the messages both use into one file (a common.rdl both import)",
        ])
        // Through a third file, and through a method's types.
        XCTAssertEqual(check([("a.rdl", "message A {}\nservice S = 1 { rpc M(A) returns (C) = 1; }"),
                              ("b.rdl", "message B { A a = 1; }"), ("c.rdl", "message C { B b = 1; }")]).count, 1)
        XCTAssertEqual(check([("a.rdl", "message A {}\nservice S = 1 { rpc M(A) returns (C) = 1; }"),
                              ("b.rdl", "message B { A a = 1; }"), ("c.rdl", "message C { B b = 1; }")]).first?.hasPrefix("a.rdl:3:35: error: schema files import each other in a cycle (a.rdl → c.rdl → b.rdl → a.rdl)"), true)
        // One way only: fine.
        XCTAssertEqual(check([("a.rdl", "message A { B b = 1; }"), ("b.rdl", "message B {}")]), [])
    }

    func testUnknownType() {
        assertErrors("message A {\n  Missing m = 1;\n}", ["3:3: unknown type 'Missing'; expected a scalar type, a message or an enum"])
        assertErrors("message A { map<string, Nope> m = 1; }", ["2:25: unknown type 'Nope'; expected a scalar type, a message or an enum"])
        assertErrors("message A {}\nservice S = 1 { rpc M(A) returns (Gone) = 1; }",
                     ["3:35: unknown type 'Gone'; expected a scalar type, a message or an enum"])
    }

    func testDuplicateFieldNumber() {
        assertErrors("message A {\n  int32 x = 1;\n  int32 y = 1;\n}",
                     ["4:13: duplicate field number 1 in 'A' (first used by 'x' at t.rdl:3:9)"])
    }

    func testDuplicateFieldName() {
        assertErrors("message A {\n  int32 x = 1;\n  string x = 2;\n}",
                     ["4:10: duplicate field name 'x' in 'A' (first declared at t.rdl:3:9)"])
        assertErrors("message A { int32 foo_bar = 1; int32 fooBar = 2; }",
                     ["2:38: field 'fooBar' and field 'foo_bar' both become 'fooBar' in generated code"])
    }

    func testFieldNumberRange() {
        assertErrors("message A { int32 x = 0; }", ["2:23: field number 0 out of range; expected 1 to 536870911 (2^29-1)"])
        assertErrors("message A { int32 x = 536870912; }", ["2:23: field number 536870912 out of range; expected 1 to 536870911 (2^29-1)"])
        assertErrors("message A { int32 x = -4; }", ["2:23: field number -4 out of range; expected 1 to 536870911 (2^29-1)"])
        assertErrors("message A { int32 x = 536870911; }", [])
        assertErrors("message A { int32 x = 19000; int32 y = 19999; int32 z = 18999; int32 w = 20000; }", [
            "2:23: field number 19000 lies in 19000-19999, which protobuf reserves for itself",
            "2:40: field number 19999 lies in 19000-19999, which protobuf reserves for itself",
        ])
    }

    func testReservedNumbersAndNames() {
        assertErrors("""
            message A {
              reserved 2, 5 to 7;
              reserved "old";
              int32 a = 6;
              int32 old = 8;
              int32 b = 2;
              int32 c = 8 ;
            }
            enum E { E_ZERO = 0; reserved 3; reserved "E_GONE"; E_THREE = 3; E_GONE = 4; }
            """, [
                "5:13: field number 6 is reserved (at t.rdl:3:15)",
                "6:9: field name 'old' is reserved (at t.rdl:4:12)",
                "7:13: field number 2 is reserved (at t.rdl:3:12)",
                "8:13: duplicate field number 8 in 'A' (first used by 'old' at t.rdl:6:9)",
                "10:53: enum value number 3 is reserved (at t.rdl:10:31)",
                "10:66: enum value name 'E_GONE' is reserved (at t.rdl:10:43)",
            ])
        assertErrors("message A { reserved 9 to 3; }", ["2:22: reserved range 9 to 3 is empty; expected the lower bound first"])
        assertErrors("message A { reserved 1 to max; int32 x = 100; }", ["2:42: field number 100 is reserved (at t.rdl:2:22)"])
    }

    func testDuplicateMethod() {
        assertErrors("""
            message A {}
            service S = 1 {
              rpc Get(A) returns (A) = 1;
              rpc Get(A) returns (A) = 2;
              rpc Put(A) returns (A) = 1;
            }
            """, [
                "5:7: duplicate method 'Get' in service 'S' (first declared at t.rdl:4:7)",
                "6:28: duplicate method number 1 in service 'S' (first used by 'Get' at t.rdl:4:7)",
            ])
    }

    func testServiceAndMethodIds() {
        assertErrors("message A {}\nservice S = 0 { rpc M(A) returns (A) = 70000; }\nservice T = 9 {}\nservice U = 9 {}", [
            "3:13: service id 0 out of range; expected 1 to 65535",
            "3:40: method number 70000 out of range; expected 1 to 65535",
            "5:13: duplicate service id 9 (first used by 'T' at t.rdl:4:9)",
        ])
        assertErrors("enum E { E_Z = 0; }\nmessage A {}\nservice S = 1 { rpc M(E) returns (A) = 1; }",
                     ["4:23: request type 'E' is an enum; expected a message"])
    }

    func testMapKeyTypes() {
        assertErrors("""
            enum E { E_Z = 0; }
            message A {
              map<float, int32> a = 1;
              map<bytes, int32> b = 2;
              map<E, int32> c = 3;
              map<A, int32> d = 4;
              map<int64, A> ok = 5;
              map<bool, E> ok2 = 6;
            }
            """, [
                "4:7: map key type 'float' is not allowed; expected an integer type, bool or string",
                "5:7: map key type 'bytes' is not allowed; expected an integer type, bool or string",
                "6:7: map key type 'E' is not allowed; expected an integer type, bool or string",
                "7:7: map key type 'A' is not allowed; expected an integer type, bool or string",
            ])
        assertErrors("message A { repeated map<int32, int32> m = 1; }", ["2:22: map fields cannot be 'repeated'"])
        assertErrors("message A { map<int32, map<int32, int32>> m = 1; }",
                     ["2:24: unexpected 'map'; expected a map value type (maps cannot nest)"])
    }

    func testUnterminatedCommentAndString() {
        assertErrors("message A {}\n/* never closed\nmessage B {}", ["3:1: unterminated comment; expected '*/' before the end of the file"])
        assertErrors("message A { reserved \"abc; }", [
            "2:22: unterminated string; expected a closing '\"' before the end of the line",
            "2:29: unexpected end of file; expected ';'",
        ])
    }

    func testUnexpectedToken() {
        assertErrors("message A { int32 x = ; }", ["2:23: unexpected ';'; expected a field number"])
        assertErrors("message A { int32 = 1; }", ["2:19: unexpected '='; expected a field name"])
        assertErrors("message { }", ["2:9: unexpected '{'; expected a message name"])
        assertErrors("message A { int32 x = 1 }", ["2:25: unexpected '}'; expected ';'"])
        assertErrors("message A { int32 x = 1; @ }", ["2:26: unexpected character '@'"])
        assertErrors("message A {", ["2:12: unexpected end of file; expected '}' to close message 'A'"])
        assertErrors("service S = 1 { rpc M(A) gives (A) = 1; }\nmessage A {}", ["2:26: unexpected 'gives'; expected 'returns'"])
        assertErrors("message A { int32 x = 12ab; }", ["2:23: malformed number '12ab'"])
    }

    func testEnumRules() {
        assertErrors("enum E { E_ONE = 1; E_ZERO = 0; }", ["2:10: the first value of enum 'E' must be 0 (proto3 uses it as the default); found 1"])
        assertErrors("enum E { }", ["2:6: enum 'E' has no values; expected a first value numbered 0"])
        assertErrors("enum E { A = 0; B = 0; A = 2; }", [
            "2:17: duplicate enum value number 0 in 'E' (first used by 'A' at t.rdl:2:10)",
            "2:24: duplicate enum value name 'A' (first declared at t.rdl:2:10)",
        ])
        assertErrors("enum E { UNKNOWN = 0; }\nenum F { UNKNOWN = 0; }", [
            "3:10: enum value 'UNKNOWN' is already defined by enum 'E' at t.rdl:2:10; protobuf scopes enum values beside their enum, so prefix them with the enum name",
        ])
        assertErrors("enum E { E_Z = 0; E_BIG = 2147483648; }", ["2:19: enum value 2147483648 out of range; expected a 32-bit signed integer"])
        assertErrors("enum E { E_Z = 0; E_NEG = -2147483648; }", [])
    }

    func testTypeNameRules() {
        assertErrors("message A {}\nmessage A {}", ["3:9: duplicate type name 't.v1.A' (first declared at t.rdl:2:9)"])
        assertErrors("message String {}", ["2:9: type name 'String' is reserved: generated Swift code uses it; choose another name"])
        assertErrors("message Item {}\nmessage A { message Item {} }", [
            "3:21: nested type 'A.Item' has the name of top-level type 'Item'; generated code could not tell them apart",
        ])
    }

    func testPackageRules() {
        switch IDLCompiler.check([("a.rdl", "message A {}")]) {
        case .success: XCTFail("a file without a package must fail")
        case .failure(let f): XCTAssertEqual(f.description, "a.rdl:1:1: error: missing package declaration; expected 'package name;'")
        }
        switch IDLCompiler.check([("a.rdl", "package x;\nmessage A {}"), ("b.rdl", "package y;\nmessage B { A a = 1; }")]) {
        case .success: XCTFail("two packages must fail")
        case .failure(let f):
            XCTAssertEqual(f.diagnostics.map(\.description), [
                "b.rdl:1:1: error: package 'y' differs from 'x'; all files compiled together must share one package",
            ])
        }
    }

    func testManyErrorsInOneRun() {
        let all = errors("""
            message A {
              int32 x = 0;
              Nope y = 2;
              int32 x = 3;
              int32 z = 19500;
            }
            enum E { E_ONE = 1; }
            message B { int32 = 5; int32 ok = 1; }
            """)
        XCTAssertEqual(all.count, 6, all.joined(separator: "\n"))
        XCTAssertEqual(all.map { $0.split(separator: ":").prefix(2).joined(separator: ":") },
                       ["3:13", "4:3", "5:9", "6:13", "8:10", "9:19"], "sorted by position")
    }

    func testResolutionFollowsProtobufScoping() throws {
        let schema = """
            package t.v1;
            message Outer {
              message Inner { int32 v = 1; }
              Inner a = 1;
              Outer.Inner b = 2;
              .t.v1.Outer.Inner c = 3;
              t.v1.Outer.Inner d = 4;
            }
            message Other { Outer.Inner x = 1; }
            """
        let files = try IDLCompiler.compile([("s.rdl", schema)], options: CompileOptions(protoOut: "")).get()
        let proto = files[0].contents
        XCTAssertEqual(proto.components(separatedBy: ".t.v1.Outer.Inner ").count - 1, 5)
    }
}
