using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Analytics.Submission;

/// <summary>
/// The server certificate: from configuration (PFX or PEM), or self-signed, generated once and kept
/// in <c>DATA/keys/smtp-self-signed.pfx</c> (mode 0600) so clients that pin it keep working.
/// </summary>
internal static class CertificateProvider
{
    public const string SelfSignedFileName = "smtp-self-signed.pfx";

    public static X509Certificate2 Load(TlsOptions tls, string keyDirectory, string serverName, TimeProvider time)
    {
        if (!string.IsNullOrWhiteSpace(tls.CertificatePath))
        {
            return LoadConfigured(tls);
        }

        var path = Path.Combine(keyDirectory, SelfSignedFileName);
        if (File.Exists(path))
        {
            var existing = X509CertificateLoader.LoadPkcs12FromFile(path, null);
            if (existing.NotAfter.ToUniversalTime() > time.GetUtcNow().UtcDateTime.AddDays(7))
            {
                return existing;
            }

            existing.Dispose();
        }

        Directory.CreateDirectory(keyDirectory);
        var pfx = CreateSelfSigned(serverName, time);
        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        }))
        {
            stream.Write(pfx);
            stream.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
        return X509CertificateLoader.LoadPkcs12(pfx, null);
    }

    private static X509Certificate2 LoadConfigured(TlsOptions tls)
    {
        var path = tls.CertificatePath!;
        try
        {
            var extension = Path.GetExtension(path).ToLowerInvariant();
            if (extension is ".pfx" or ".p12")
            {
                return X509CertificateLoader.LoadPkcs12FromFile(path, tls.Password);
            }

            using var pem = string.IsNullOrWhiteSpace(tls.KeyPath)
                ? X509Certificate2.CreateFromPemFile(path)
                : X509Certificate2.CreateFromPemFile(path, tls.KeyPath);
            if (!pem.HasPrivateKey)
            {
                throw new InvalidOperationException($"The certificate {path} has no private key; set Submission:Tls:KeyPath.");
            }

            // SslStream wants a key it can hand to the platform TLS stack; a PKCS#12 round trip gives one.
            return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        }
        catch (CryptographicException ex)
        {
            throw new InvalidOperationException($"Cannot load the TLS certificate {path}: {ex.Message}", ex);
        }
    }

    private static byte[] CreateSelfSigned(string serverName, TimeProvider time)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=" + serverName, key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(serverName);
        if (serverName != "localhost")
        {
            san.AddDnsName("localhost");
        }

        san.AddIpAddress(IPAddress.Loopback);
        san.AddIpAddress(IPAddress.IPv6Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var now = time.GetUtcNow();
        using var certificate = request.CreateSelfSigned(now.AddDays(-1), now.AddYears(2));
        return certificate.Export(X509ContentType.Pkcs12);
    }
}
