using System.Collections;
using System.CommandLine;
using System.ComponentModel.DataAnnotations;
using System.Globalization;
using System.Reflection;
using System.Text.RegularExpressions;
using Analytics.Cli.Hosting;
using Analytics.Detection.Scoring;
using Analytics.Events;
using Analytics.Store;
using Analytics.Submission;
using Analytics.Limits;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;

namespace Analytics.Cli.Commands;

/// <summary>
/// <c>analytics config check [FILE]</c>: loads the configuration exactly as <c>serve</c> does
/// (appsettings.json, FILE, ANALYTICS_* environment), binds and validates every options section, and
/// explains each problem with its key path and the allowed range. Keys that no section knows are
/// warnings: the binder ignores them silently, which is how a typo goes unnoticed for months.
/// </summary>
internal static partial class ConfigCommand
{
    /// <summary>Sections serve reads, with the options type that binds them (null: not validated here).</summary>
    private static readonly Dictionary<string, Type?> Sections = new(StringComparer.OrdinalIgnoreCase)
    {
        ["Store"] = typeof(StoreOptions),
        ["Events"] = typeof(EventSinkOptions),
        [SubmissionOptions.SectionName] = typeof(SubmissionOptions),
        [LimitsOptions.SectionName] = typeof(LimitsOptions),
        ["Detection"] = typeof(DetectionOptions),
        ["Metrics"] = typeof(MetricsOptions),
        ["Serilog"] = null,
        ["Logging"] = null,
        ["Review"] = null,
        ["Kestrel"] = null,
        ["AllowedHosts"] = null,
        ["DataDirectory"] = null,
        ["DATA"] = null,
    };

    public static Command Create(CommandContext context)
    {
        var file = new Argument<string?>("FILE") { Description = "Configuration file to check (default: --config, else appsettings.json and the environment alone)", Arity = ArgumentArity.ZeroOrOne };
        var check = new Command("check", "Validate a configuration file as serve would load it: every section, every key, with the allowed ranges. Exit 0 when valid (warnings allowed), 2 when not.")
        {
            file,
        };
        check.SetAction(async (parse, cancellationToken) =>
        {
            var path = parse.GetValue(file) ?? parse.GetValue(GlobalOptions.Config);
            var settings = AnalyticsSettings.Load(parse.GetValue(GlobalOptions.Data), path);
            var report = Check(settings.Configuration, path is null ? null : FileOnly(path, settings.Renamed), settings.Renamed);
            var output = context.IO.Out;
            await output.WriteLineAsync(path is null ? "checking appsettings.json and ANALYTICS_* environment" : $"checking {Path.GetFullPath(path)} (with appsettings.json and ANALYTICS_* environment, as serve loads it)");
            foreach (var error in report.Errors)
            {
                await output.WriteLineAsync("  error:   " + error);
            }

            foreach (var warning in report.Warnings)
            {
                await output.WriteLineAsync("  warning: " + warning);
            }

            if (report.Errors.Count > 0)
            {
                await context.IO.Error.WriteLineAsync($"error: configuration is not valid: {report.Errors.Count} error(s), {report.Warnings.Count} warning(s)");
                return 2;
            }

            await output.WriteLineAsync($"configuration is valid ({report.Warnings.Count} warning(s))");
            return 0;
        });
        var command = new Command("config", "Configuration: check a file before serve uses it") { check };
        return command;
    }

    /// <summary>What is wrong (errors) and what looks wrong (warnings) in <paramref name="configuration"/>.</summary>
    /// <param name="fileOnly">The file alone, for unknown-key warnings (environment variables are not checked for spelling).</param>
    public static (IReadOnlyList<string> Errors, IReadOnlyList<string> Warnings) Check(IConfiguration configuration, IConfiguration? fileOnly,
        IReadOnlyList<(string Old, string New)> renamed)
    {
        var errors = new List<string>();
        var warnings = new List<string>();
        foreach (var (section, type) in Sections.Concat(DiscoveredSections()).DistinctBy(s => s.Key, StringComparer.OrdinalIgnoreCase))
        {
            if (type is null)
            {
                continue;
            }

            object options;
            try
            {
                options = configuration.GetSection(section).Get(type) ?? Activator.CreateInstance(type)!;
            }
            catch (InvalidOperationException ex)
            {
                // The binder names the key and the type: "Failed to convert configuration value at 'Events:Capacity' to type 'System.Int32'."
                errors.Add(Explain(ex));
                continue;
            }

            errors.AddRange(SectionOptions.Validate(section, options).Select(failure => WithConfiguredValue(failure, configuration)));

            // Cross-field rules (endpoints, overlapping ports, certificate files, thresholds in
            // order): the options class's own validators, the ones serve runs at start.
            errors.AddRange(CrossFieldFailures(type, options).Where(f => !f.Contains(": The field ", StringComparison.Ordinal)));

            if (options is Analytics.Submission.Delivery.DeliveryOptions delivery)
            {
                // Next hops, routes, backoff order, AUTH without TLS: rules no attribute can say.
                var cross = new Analytics.Submission.Delivery.DeliveryOptionsValidator().Validate(null, delivery).Failures ?? [];
                errors.AddRange(cross.Where(f => !f.Contains(": The field ", StringComparison.Ordinal)));
            }

            if (options is DetectionOptions detection && !string.IsNullOrWhiteSpace(detection.ModelDirectory) && !Directory.Exists(detection.ModelDirectory))
            {
                warnings.Add($"Detection:ModelDirectory: '{detection.ModelDirectory}' does not exist; the scorer uses the rule baseline until a model is there.");
            }
        }

        foreach (var (old, now) in renamed)
        {
            warnings.Add($"{old}: renamed to {now} (read under its new name; rename it in the file).");
        }

        if (fileOnly is not null)
        {
            foreach (var top in fileOnly.GetChildren())
            {
                if (!Sections.TryGetValue(top.Key, out var type) && !DiscoveredSections().Any(s => string.Equals(s.Key, top.Key, StringComparison.OrdinalIgnoreCase)))
                {
                    warnings.Add($"{top.Key}: unknown section (serve ignores it). Known: {string.Join(", ", Sections.Keys.Where(k => k is not ("DATA" or "Logging" or "Kestrel" or "AllowedHosts")))}.");
                    continue;
                }

                type ??= DiscoveredSections().FirstOrDefault(s => string.Equals(s.Key, top.Key, StringComparison.OrdinalIgnoreCase)).Value;
                if (type is not null)
                {
                    UnknownKeys(top, type, warnings);
                }
            }
        }

        return (errors, warnings);
    }

    /// <summary>The file alone, with renamed keys under their new names (a renamed key is reported once, as renamed).</summary>
    private static IConfiguration FileOnly(string path, IReadOnlyList<(string Old, string New)> renamed)
    {
        var file = new ConfigurationBuilder().AddJsonFile(Path.GetFullPath(path), optional: false).Build();
        var oldKeys = renamed.Select(r => r.Old).ToHashSet(StringComparer.OrdinalIgnoreCase);
        var keys = file.AsEnumerable().Where(kv => kv.Value is not null && !oldKeys.Contains(kv.Key))
            .Concat(renamed.Select(r => new KeyValuePair<string, string?>(r.New, file[r.Old]))).Where(kv => kv.Value is not null);
        return new ConfigurationBuilder().AddInMemoryCollection(keys).Build();
    }

    /// <summary>What the options class's own <see cref="IValidateOptions{TOptions}"/> implementations say (serve runs the same).</summary>
    private static IEnumerable<string> CrossFieldFailures(Type optionsType, object options)
    {
        var validatorInterface = typeof(IValidateOptions<>).MakeGenericType(optionsType);
        foreach (var type in optionsType.Assembly.GetTypes().Where(t => t is { IsClass: true, IsAbstract: false } && validatorInterface.IsAssignableFrom(t) && t.GetConstructor(Type.EmptyTypes) is not null))
        {
            var validator = Activator.CreateInstance(type)!;
            var result = (ValidateOptionsResult)validatorInterface.GetMethod(nameof(IValidateOptions<object>.Validate))!.Invoke(validator, [null, options])!;
            foreach (var failure in result.Failures ?? [])
            {
                yield return failure;
            }
        }
    }

    /// <summary>A validation failure (<c>Key: message</c>) with the value configured for that key, when there is one.</summary>
    private static string WithConfiguredValue(string failure, IConfiguration configuration)
    {
        var colon = failure.IndexOf(": ", StringComparison.Ordinal);
        return colon > 0 && configuration[failure[..colon]] is { } value ? $"{failure} Configured: '{value}'." : failure;
    }

    private static void UnknownKeys(IConfigurationSection section, Type type, List<string> warnings)
    {
        foreach (var child in section.GetChildren())
        {
            var property = type.GetProperty(child.Key, BindingFlags.Public | BindingFlags.Instance | BindingFlags.IgnoreCase);
            if (property is null || !property.CanWrite)
            {
                var known = type.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite).Select(p => p.Name);
                warnings.Add($"{child.Path}: unknown key (ignored). Keys of {section.Path}: {string.Join(", ", known)}.");
            }
            else if (SectionOptions.IsOptionsObject(property.PropertyType))
            {
                UnknownKeys(child, property.PropertyType, warnings);
            }
        }
    }

    /// <summary>A binder failure ("Failed to convert configuration value …") in one line an operator can act on.</summary>
    internal static string Explain(InvalidOperationException ex)
    {
        // "Failed to convert configuration value 'lots' at 'Events:Capacity' to type 'System.Int32'."
        var match = BinderFailure().Match(ex.Message);
        if (!match.Success)
        {
            return ex.Message;
        }

        var type = match.Groups["type"].Value;
        var hint = type[(type.LastIndexOf('.') + 1)..] switch
        {
            "Int32" or "Int64" or "UInt32" or "UInt64" => "a whole number",
            "Double" or "Single" or "Decimal" => "a number",
            "Boolean" => "true or false",
            "TimeSpan" => "a duration [d.]hh:mm:ss[.fff], e.g. 00:00:30",
            var other => other,
        };
        return $"{match.Groups["key"].Value}: '{match.Groups["value"].Value}' is not {hint}.";
    }

    [GeneratedRegex(@"value '(?<value>.*)' at '(?<key>[^']+)' to type '(?<type>[^']+)'", RegexOptions.Singleline)]
    private static partial Regex BinderFailure();

    /// <summary>
    /// Options classes of other parts (limits, review console) declare <c>public const string SectionName</c>:
    /// they are validated here as soon as they exist, without this file knowing them.
    /// </summary>
    private static IEnumerable<KeyValuePair<string, Type?>> DiscoveredSections() => Discovered.Value;

    private static readonly Lazy<List<KeyValuePair<string, Type?>>> Discovered = new(() => [.. Discover()]);

    private static IEnumerable<KeyValuePair<string, Type?>> Discover()
    {
        var self = typeof(ConfigCommand).Assembly;
        var assemblies = self.GetReferencedAssemblies().Where(a => a.Name?.StartsWith("Analytics.", StringComparison.Ordinal) == true).Select(Assembly.Load).Append(self);
        foreach (var assembly in assemblies)
        {
            Type[] types;
            try
            {
                types = assembly.GetTypes();
            }
            catch (ReflectionTypeLoadException ex)
            {
                types = ex.Types.OfType<Type>().ToArray();
            }

            foreach (var type in types)
            {
                if (type.IsClass && !type.IsAbstract && type.Name.EndsWith("Options", StringComparison.Ordinal) && type.GetConstructor(Type.EmptyTypes) is not null &&
                    type.GetField("SectionName", BindingFlags.Public | BindingFlags.Static) is { IsLiteral: true } field && field.GetRawConstantValue() is string name &&
                    !name.Contains(':', StringComparison.Ordinal))
                {
                    yield return new(name, type);
                }
            }
        }
    }
}
