using System.Text;
using Analytics.Events;
using SmtpServer;
using SmtpServer.Protocol;

namespace Analytics.Submission.Listener;

/// <summary>
/// SmtpServer's parser hands each parsed command to this factory. We keep its commands (their
/// execution is internal to SmtpServer) but answer EHLO/HELO ourselves, and make an AUTH initial
/// response that SmtpServer could not decode into the malformed marker instead of a faulted session.
/// </summary>
internal sealed class CommandFactory : SmtpCommandFactory, ISmtpCommandFactory
{
    private static readonly string MalformedPlain = Convert.ToBase64String(Encoding.UTF8.GetBytes("\0" + GuardedReader.MalformedMarker + "\0"));
    private static readonly string MalformedLogin = Convert.ToBase64String(Encoding.UTF8.GetBytes(GuardedReader.MalformedMarker));

    public override SmtpCommand CreateEhlo(string domainOrAddress) => new Ehlo(domainOrAddress);

    public override SmtpCommand CreateHelo(string domainOrAddress) => new Helo(domainOrAddress);

    SmtpCommand ISmtpCommandFactory.CreateAuth(AuthenticationMethod method, string parameter)
    {
        var plain = method == AuthenticationMethod.Plain;
        if (!string.IsNullOrWhiteSpace(parameter) && !GuardedReader.IsAcceptableAuthResponse(parameter.Trim(), plain))
        {
            parameter = plain ? MalformedPlain : MalformedLogin;
        }

        return CreateAuth(method, parameter);
    }

    private static string Greeting(ISessionContext context) => SessionState.From(context).Listener.Options.ServerName + " Hello";

    private sealed class Ehlo(string domainOrAddress) : EhloCommand(domainOrAddress)
    {
        protected override string GetGreeting(ISessionContext context) => Greeting(context);

        protected override IEnumerable<string> GetExtensions(ISessionContext context)
        {
            var session = SessionState.From(context);
            var options = session.Listener.Options;
            yield return "PIPELINING";
            yield return "8BITMIME";
            yield return "SMTPUTF8";
            yield return "ENHANCEDSTATUSCODES";
            if (!context.Pipe.IsSecure && context.EndpointDefinition.CertificateFactory is not null)
            {
                yield return "STARTTLS";
            }

            yield return "SIZE " + session.Listener.LimitOptions.Session.MaxMessageSize.ToString(System.Globalization.CultureInfo.InvariantCulture);
            if (session.Role == ListenerRole.Submission && (context.Pipe.IsSecure || options.AllowInsecureAuth))
            {
                yield return "AUTH PLAIN LOGIN";
            }
        }
    }

    private sealed class Helo(string domainOrAddress) : HeloCommand(domainOrAddress)
    {
        protected override string GetGreeting(ISessionContext context) => Greeting(context);
    }
}
