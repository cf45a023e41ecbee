import DepotCore
import Foundation
import Testing

@testable import DepotObjectStore

/// The signer against published AWS examples and against botocore (AWS's own Python signer).
@Suite struct SigV4Tests {
    /// AWS S3 API reference, "Signature Calculations for the Authorization Header", example GET Object.
    @Test func awsS3ExampleGetObjectWithRange() {
        let signer = SigV4Signer(
            accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash), ("x-amz-date", "20130524T000000Z"),
        ]
        let (request, signed) = SigV4Signer.canonicalRequest(
            method: "GET", path: "/test.txt", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(signed == "host;range;x-amz-content-sha256;x-amz-date")
        let sts = signer.stringToSign(canonicalRequest: request, amzDate: "20130524T000000Z")
        #expect(sts.hasSuffix("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"))
        let auth = signer.authorization(
            method: "GET", path: "/test.txt", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash,
            amzDate: "20130524T000000Z")
        #expect(
            auth
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                + "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    /// The same page, example PUT Object (a signed payload hash, a `$` in the key).
    @Test func awsS3ExamplePutObject() {
        let signer = SigV4Signer(
            accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
        let body = Array("Welcome to Amazon S3.".utf8)
        let hash = body.withUnsafeBytes { SHA256.hash($0) }.hex
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"), ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-content-sha256", hash), ("x-amz-date", "20130524T000000Z"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ]
        let path = "/" + SigV4Signer.encode("test$file.text", keepSlash: true)
        #expect(path == "/test%24file.text")
        let auth = signer.authorization(
            method: "PUT", path: path, query: [], headers: headers, payloadHash: hash, amzDate: "20130524T000000Z")
        #expect(auth.hasSuffix("Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"))
    }

    /// The same page, example GET Bucket (List Objects): query parameters sorted and encoded.
    @Test func awsS3ExampleListObjects() {
        let signer = SigV4Signer(
            accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"), ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash),
            ("x-amz-date", "20130524T000000Z"),
        ]
        let auth = signer.authorization(
            method: "GET", path: "/", query: [("prefix", "J"), ("max-keys", "2")], headers: headers,
            payloadHash: SigV4Signer.emptyPayloadHash, amzDate: "20130524T000000Z")
        #expect(auth.hasSuffix("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"))
    }

    /// AWS's SigV4 test suite, get-vanilla (service "service", no payload header).
    @Test func awsTestSuiteGetVanilla() {
        let signer = SigV4Signer(
            accessKey: "AKIDEXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region: "us-east-1", service: "service")
        let auth = signer.authorization(
            method: "GET", path: "/", query: [], headers: [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")],
            payloadHash: SigV4Signer.emptyPayloadHash, amzDate: "20150830T123600Z")
        #expect(auth.hasSuffix("SignedHeaders=host;x-amz-date,Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"))
    }

    /// Requests of the shapes Depot sends (a part upload with an encoded upload id and a conditional
    /// header; a ListObjectsV2 page), signed by botocore 1.x with the same inputs.
    @Test func matchesBotocoreOnDepotsOwnRequests() {
        let signer = SigV4Signer(accessKey: "AKIDEXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region: "eu-west-1")
        let date = "20261203T005352Z"
        let body = Array("hello".utf8)
        let hash = body.withUnsafeBytes { SHA256.hash($0) }.hex
        let path = "/depot-test/" + SigV4Signer.encode("p x/packs/01/000000000001.pack", keepSlash: true)
        let put = signer.authorization(
            method: "PUT", path: path, query: [("uploadId", "a+b/c="), ("partNumber", "2")],
            headers: [("host", "127.0.0.1:9000"), ("if-none-match", "*"), ("x-amz-content-sha256", hash), ("x-amz-date", date)],
            payloadHash: hash, amzDate: date)
        #expect(put.hasSuffix("Signature=68fba82a56d31bb5e70ee9abb14859df13b4d2109f14541c29664ab5c920feaf"))
        let list = signer.authorization(
            method: "GET", path: "/depot-test", query: [("list-type", "2"), ("prefix", "p/packs/"), ("max-keys", "1000")],
            headers: [("host", "127.0.0.1:9000"), ("x-amz-content-sha256", SigV4Signer.emptyPayloadHash), ("x-amz-date", date)],
            payloadHash: SigV4Signer.emptyPayloadHash, amzDate: date)
        #expect(list.hasSuffix("Signature=94b3e727cca4dab2eceb97fd095dd2a5ffb13b6c228d345c7fe13e2b45295858"))
    }

    @Test func encodingAndTimestamps() {
        #expect(SigV4Signer.encode("a b/c~d+é", keepSlash: true) == "a%20b/c~d%2B%C3%A9")
        #expect(SigV4Signer.encode("a/b") == "a%2Fb")
        #expect(SigV4Signer.canonicalQuery([("uploads", "")]) == "uploads=")
        let t = SigV4Signer.timestamps(Date(timeIntervalSince1970: 1_369_353_600))
        #expect(t.amzDate == "20130524T000000Z" && t.day == "20130524")
    }

    @Test func xmlAnswersAreReadWithoutTrust() {
        let list = """
            <ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>p/a&amp;b</Key><Size>12</Size></Contents>\
            <Contents><Key>p/c</Key><Size>3</Size></Contents><NextContinuationToken>t1</NextContinuationToken></ListBucketResult>
            """
        let items = MiniXML.elements("Contents", in: list)
        #expect(items.count == 2)
        #expect(MiniXML.first("Key", in: items[0]) == "p/a&b")
        #expect(MiniXML.first("NextContinuationToken", in: list) == "t1")
        #expect(MiniXML.first("Key", in: "<Key>unterminated") == nil)
        #expect(MiniXML.escape("\"a<b>&") == "&quot;a&lt;b&gt;&amp;")
    }
}
