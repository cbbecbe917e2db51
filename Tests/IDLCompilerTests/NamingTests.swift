@testable import IDLCompiler
import XCTest

final class NamingTests: XCTestCase {
    func testLowerCamel() {
        XCTAssertEqual(Naming.lowerCamel("advertiser_id"), "advertiserId")
        XCTAssertEqual(Naming.lowerCamel("MatchMany"), "matchMany")
        XCTAssertEqual(Naming.lowerCamel("HTTPRequest"), "httpRequest")
        XCTAssertEqual(Naming.lowerCamel("URL"), "url")
        XCTAssertEqual(Naming.lowerCamel("NOT_FOUND"), "notFound")
        XCTAssertEqual(Naming.lowerCamel("x"), "x")
        XCTAssertEqual(Naming.lowerCamel("i32s"), "i32s")
        XCTAssertEqual(Naming.lowerCamel("_private"), "private")
    }

    func testEnumCases() {
        XCTAssertEqual(Naming.enumCase("FILE_STATE_QUEUED", enumName: "FileState"), "queued")
        XCTAssertEqual(Naming.enumCase("COLOR_RED", enumName: "Color"), "red")
        XCTAssertEqual(Naming.enumCase("HTTP_STATUS_NOT_FOUND", enumName: "HTTPStatus"), "notFound")
        XCTAssertEqual(Naming.enumCase("KIND_2D", enumName: "Kind"), "kind2d", "a digit cannot start a case name, so the prefix stays")
        XCTAssertEqual(Naming.enumCase("RED", enumName: "Color"), "red")
        XCTAssertEqual(Naming.upperSnake("FileState"), "FILE_STATE")
        XCTAssertEqual(Naming.upperSnake("HTTPStatus"), "HTTP_STATUS")
    }

    func testEscaping() {
        XCTAssertEqual(Naming.escaped("default"), "`default`")
        XCTAssertEqual(Naming.escaped("value"), "value")
        XCTAssertEqual(Naming.propertyName("unknown_fields"), "unknownFields_")
        XCTAssertEqual(Naming.propertyName("hash"), "hash")
    }

    func testDocComments() {
        XCTAssertEqual(Lexer.blockDocLines("*\n * First line.\n *\n * Third.\n "), ["First line.", "", "Third."])
    }
}
