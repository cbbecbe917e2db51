import Foundation
@testable import ObjectStorage
import XCTest

/// AWS's published Signature Version 4 vectors: the generic test suite
/// (credentials AKIDEXAMPLE, 2015-08-30, us-east-1, service "service") and
/// the S3 examples of "Authenticating Requests: Using the Authorization
/// Header" (AKIAIOSFODNN7EXAMPLE, 2013-05-24, us-east-1, s3). Each checks
/// the signature; the S3 ones also the canonical request's hash and the
/// string to sign.
final class SigV4Tests: XCTestCase {
    let suite = SigV4Signer(credentials: S3Credentials(accessKeyID: "AKIDEXAMPLE",
                                                       secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                            region: "us-east-1", service: "service")
    let suiteDate = Date(timeIntervalSince1970: 1_440_938_160) // 20150830T123600Z
    let s3 = SigV4Signer(credentials: S3Credentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE",
                                                    secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                         region: "us-east-1")
    let s3Date = Date(timeIntervalSince1970: 1_369_353_600) // 20130524T000000Z

    func testDates() {
        XCTAssertEqual(SigV4Signer.amzDate(suiteDate), "20150830T123600Z")
        XCTAssertEqual(SigV4Signer.amzDate(s3Date), "20130524T000000Z")
    }

    private func suiteAuthorization(_ method: String, path: String, query: [(String, String)] = [],
                                    headers extra: [(String, String)] = [], body: String = "",
                                    signer: SigV4Signer? = nil) -> String {
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")] + extra
        return (signer ?? suite).authorization(method: method, encodedPath: SigV4Signer.encodePath(path), query: query, headers: headers,
                                               payloadHash: SigV4Signer.hexSHA256(Array(body.utf8)), date: suiteDate)
    }

    private func expect(_ signedHeaders: String, _ signature: String) -> String {
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=\(signedHeaders), Signature=\(signature)"
    }

    func testSuiteVectors() {
        XCTAssertEqual(suiteAuthorization("GET", path: "/"),
                       expect("host;x-amz-date", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"), "get-vanilla")
        XCTAssertEqual(suiteAuthorization("GET", path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
                       expect("host;x-amz-date", "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"), "get-unreserved")
        XCTAssertEqual(suiteAuthorization("GET", path: "/", query: [("Param2", "value2"), ("Param1", "value1")]),
                       expect("host;x-amz-date", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
                       "get-vanilla-query-order-key-case")
        XCTAssertEqual(suiteAuthorization("GET", path: "/", query: [("Param1", "value2"), ("Param1", "value1")]),
                       expect("host;x-amz-date", "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694"),
                       "get-vanilla-query-order-value")
        XCTAssertEqual(suiteAuthorization("GET", path: "/", query: [("\u{1234}", "bar")]),
                       expect("host;x-amz-date", "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
                       "get-vanilla-utf8-query")
        XCTAssertEqual(suiteAuthorization("GET", path: "/", headers: [("My-Header1", " value1"), ("My-Header2", "\"a   b   c\"")]),
                       expect("host;my-header1;my-header2;x-amz-date", "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
                       "get-header-value-trim")
        XCTAssertEqual(suiteAuthorization("GET", path: "/", headers: [("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1")]),
                       expect("host;my-header1;x-amz-date", "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
                       "get-header-key-duplicate")
        XCTAssertEqual(suiteAuthorization("POST", path: "/", headers: [("Content-Type", "application/x-www-form-urlencoded")], body: "Param1=value1"),
                       expect("content-type;host;x-amz-date", "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
                       "post-x-www-form-urlencoded")
    }

    func testSuiteSessionTokenVector() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"
        var credentials = suite.credentials
        credentials.sessionToken = token
        let signer = SigV4Signer(credentials: credentials, region: "us-east-1", service: "service")
        XCTAssertEqual(suiteAuthorization("GET", path: "/", headers: [("X-Amz-Security-Token", token)], signer: signer),
                       expect("host;x-amz-date;x-amz-security-token", "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"),
                       "get-vanilla with a session token")
    }

    private func checkS3(_ method: String, path: String, query: [(String, String)], headers extra: [(String, String)],
                         payloadHash: String, canonicalHash: String, signedHeaders: String, signature: String,
                         file: StaticString = #filePath, line: UInt = #line) {
        let headers = [("Host", "examplebucket.s3.amazonaws.com")] + extra
            + [("x-amz-content-sha256", payloadHash), ("x-amz-date", "20130524T000000Z")]
        let (canonical, signed) = s3.canonicalRequest(method: method, encodedPath: SigV4Signer.encodePath(path), query: query,
                                                      headers: headers, payloadHash: payloadHash)
        XCTAssertEqual(SigV4Signer.hexSHA256(Array(canonical.utf8)), canonicalHash, "canonical request:\n\(canonical)", file: file, line: line)
        XCTAssertEqual(signed, signedHeaders, file: file, line: line)
        let toSign = s3.stringToSign(canonicalRequest: canonical, date: s3Date)
        XCTAssertEqual(toSign, "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\(canonicalHash)", file: file, line: line)
        XCTAssertEqual(s3.signature(stringToSign: toSign, date: s3Date), signature, file: file, line: line)
    }

    func testS3DocumentationExamples() {
        checkS3("GET", path: "test.txt", query: [], headers: [("Range", "bytes=0-9")], payloadHash: SigV4Signer.emptyPayloadHash,
                canonicalHash: "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
                signedHeaders: "host;range;x-amz-content-sha256;x-amz-date",
                signature: "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        checkS3("PUT", path: "test$file.text", query: [],
                headers: [("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
                payloadHash: SigV4Signer.hexSHA256(Array("Welcome to Amazon S3.".utf8)),
                canonicalHash: "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
                signedHeaders: "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                signature: "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
        checkS3("GET", path: "", query: [("lifecycle", "")], headers: [], payloadHash: SigV4Signer.emptyPayloadHash,
                canonicalHash: "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
                signedHeaders: "host;x-amz-content-sha256;x-amz-date",
                signature: "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
        checkS3("GET", path: "", query: [("prefix", "J"), ("max-keys", "2")], headers: [], payloadHash: SigV4Signer.emptyPayloadHash,
                canonicalHash: "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
                signedHeaders: "host;x-amz-content-sha256;x-amz-date",
                signature: "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    func testPathsAreEncodedOnceAndNeverNormalised() {
        XCTAssertEqual(SigV4Signer.encodePath("a b/c+d/ሴ"), "/a%20b/c%2Bd/%E1%88%B4")
        XCTAssertEqual(SigV4Signer.encodePath("a//b/./c"), "/a//b/./c", "S3 keys are not normalised")
        XCTAssertEqual(SigV4Signer.canonicalQuery([("prefix", "a/b c"), ("list-type", "2")]), "list-type=2&prefix=a%2Fb%20c")
    }

    func testLocationsAndConfiguration() throws {
        XCTAssertEqual(try S3Configuration.parse(location: "s3://lake/members").prefix, "members/")
        XCTAssertEqual(try S3Configuration.parse(location: "s3://lake").prefix, "")
        XCTAssertThrowsError(try S3Configuration.parse(location: "s3://Bad_Bucket/x"))
        XCTAssertThrowsError(try S3Configuration.parse(location: "/data/lake"))
        let env = ["AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1"]
        let aws = try S3Configuration.resolve(location: "s3://lake/p", environment: env)
        XCTAssertEqual(aws.addressing, .virtualHost)
        XCTAssertEqual(aws.target(key: "p/a b").host, "lake.s3.eu-west-1.amazonaws.com")
        XCTAssertEqual(aws.target(key: "p/a b").encodedPath, "/p/a%20b")
        let local = try S3Configuration.resolve(location: "s3://lake", endpoint: "http://127.0.0.1:8333", environment: env)
        XCTAssertEqual(local.addressing, .path)
        XCTAssertEqual(local.target(key: "x").host, "127.0.0.1:8333")
        XCTAssertEqual(local.target(key: "x").encodedPath, "/lake/x")
        XCTAssertThrowsError(try S3Configuration.resolve(location: "s3://lake", environment: [:])) { error in
            XCTAssertTrue("\(error)".contains("AWS_ACCESS_KEY_ID"), "\(error)")
        }
    }

    func testXML() {
        let xml = S3XML(Array("""
            <?xml version="1.0"?><ListBucketResult><Contents><Key>a/b&amp;c</Key><Size>3</Size><ETag>&quot;x&quot;</ETag></Contents>\
            <Contents><Key>a/&#x41;&#66;</Key><Size>4</Size></Contents><IsTruncated>true</IsTruncated>\
            <NextContinuationToken>t/+=</NextContinuationToken><Empty/></ListBucketResult>
            """.utf8))
        XCTAssertEqual(xml.all("Contents").map { $0.value("Key") }, ["a/b&c", "a/AB"])
        XCTAssertEqual(xml.all("Contents").first?.value("ETag"), "\"x\"")
        XCTAssertEqual(xml.value("NextContinuationToken"), "t/+=")
        XCTAssertEqual(xml.value("Empty"), "")
        XCTAssertNil(xml.value("Missing"))
        XCTAssertEqual(S3XML.escape("a<&>'\""), "a&lt;&amp;&gt;&apos;&quot;")
    }
}
