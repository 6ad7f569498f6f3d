/*
 * GroovyScriptCheck: do these QuPath scripts compile, as far as they can without QuPath?
 *
 * Each script is compiled by the Groovy compiler (Debian's groovy) through
 * semantic analysis and class generation, in memory. Classes of packages that
 * exist only inside QuPath (qupath.*, javafx.*, org.slf4j.*, com.google.gson.*)
 * are left unresolved: a name the script imports explicitly from those
 * packages is accepted as an opaque class. Everything else must resolve for
 * real: JDK classes, Groovy classes and JTS (put jts-core.jar on the class
 * path). So the check fails on syntax errors, on a class used without its
 * import, and on a misspelt JDK or JTS class, but not on QuPath's own classes.
 * Star imports from QuPath's packages are refused, since they would make every
 * misspelt name "resolve". A name the script reads but never declares, assigns
 * or imports (Groovy would look it up in the script binding at run time and
 * fail there) is an error too: that is how a missing import of a class used
 * only for its static members, or a misspelt setting, shows.
 *
 * With --calls it also prints every unqualified method call the script makes
 * that neither the script nor groovy.lang.Script defines ("method NAME LINE"),
 * and, when the script has "import static <QuPath class>.*", the undeclared
 * names it reads ("field NAME LINE"): those go to QuPath's static helpers
 * (QP/QPEx), and the tests compare them with the helpers QuPath 0.5 and 0.6
 * have. Without such an import an undeclared name is an error.
 *
 * Usage: java -cp groovy-all.jar:jts-core.jar:DIR GroovyScriptCheck [--calls] FILE...
 * Exit status: 0 all compiled, 1 a script failed (the compiler's message on
 * stderr), 2 bad usage.
 */

import java.io.File;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import groovy.lang.GroovyClassLoader;
import org.codehaus.groovy.ast.ClassCodeVisitorSupport;
import org.codehaus.groovy.ast.ClassHelper;
import org.codehaus.groovy.ast.ClassNode;
import org.codehaus.groovy.ast.ImportNode;
import org.codehaus.groovy.ast.DynamicVariable;
import org.codehaus.groovy.ast.ModuleNode;
import org.codehaus.groovy.ast.expr.BinaryExpression;
import org.codehaus.groovy.ast.expr.Expression;
import org.codehaus.groovy.ast.expr.MethodCallExpression;
import org.codehaus.groovy.ast.expr.VariableExpression;
import org.codehaus.groovy.control.ClassNodeResolver;
import org.codehaus.groovy.control.CompilationFailedException;
import org.codehaus.groovy.control.CompilationUnit;
import org.codehaus.groovy.control.CompilerConfiguration;
import org.codehaus.groovy.control.Phases;
import org.codehaus.groovy.control.SourceUnit;

public final class GroovyScriptCheck {

    /** Packages that only exist inside a running QuPath. */
    static final String[] QUPATH_ONLY = {"qupath.", "javafx.", "org.slf4j.", "com.google.gson."};

    /** Methods Groovy adds to every object (DefaultGroovyMethods) that scripts call unqualified. */
    static final Set<String> GROOVY_BUILTINS = Set.of("println", "print", "printf", "sprintf", "sleep");

    public static void main(String[] args) {
        boolean listCalls = false;
        List<File> files = new ArrayList<>();
        for (String arg : args) {
            if (arg.equals("--calls")) {
                listCalls = true;
            } else {
                files.add(new File(arg));
            }
        }
        if (files.isEmpty()) {
            System.err.println("usage: GroovyScriptCheck [--calls] FILE.groovy...");
            System.exit(2);
        }
        for (File file : files) {
            try {
                List<String> calls = check(file);
                System.out.println("ok " + file);
                if (listCalls) {
                    for (String call : calls) {
                        System.out.println(call);
                    }
                }
            } catch (CompilationFailedException e) {
                System.err.println("Groovy check failed: " + file + ":\n" + e.getMessage());
                System.exit(1);
            } catch (IllegalStateException e) {
                System.err.println("Groovy check failed: " + file + ": " + e.getMessage());
                System.exit(1);
            }
        }
    }

    static boolean qupathOnly(String name) {
        for (String prefix : QUPATH_ONLY) {
            if (name.startsWith(prefix)) {
                return true;
            }
        }
        return false;
    }

    /** Compiles one script; returns its unqualified calls to methods it does not define. */
    static List<String> check(File file) {
        CompilerConfiguration config = new CompilerConfiguration();
        config.setTolerance(0);
        GroovyClassLoader loader = new GroovyClassLoader(GroovyScriptCheck.class.getClassLoader(), config);
        CompilationUnit unit = new CompilationUnit(config, null, loader);
        unit.addSource(file);
        unit.compile(Phases.CONVERSION); // parsing: syntax errors stop here

        Set<String> opaque = new LinkedHashSet<>();
        boolean opaqueStaticStar = false;
        for (ModuleNode module : unit.getAST().getModules()) {
            for (ImportNode node : module.getImports()) {
                addIfQupathOnly(opaque, node.getType().getName());
            }
            for (ImportNode node : module.getStaticImports().values()) {
                addIfQupathOnly(opaque, node.getType().getName());
            }
            for (Map.Entry<String, ImportNode> entry : module.getStaticStarImports().entrySet()) {
                String name = entry.getValue().getType().getName();
                addIfQupathOnly(opaque, name);
                opaqueStaticStar |= qupathOnly(name);
            }
            for (ImportNode node : module.getStarImports()) {
                if (qupathOnly(node.getPackageName())) {
                    throw new IllegalStateException("line " + node.getLineNumber() + ": import "
                            + node.getPackageName() + "* : import QuPath classes one by one, so that "
                            + "this check can tell a QuPath class from a misspelt one");
                }
            }
        }
        unit.setClassNodeResolver(new ClassNodeResolver() {
            @Override
            public LookupResult resolveName(String name, CompilationUnit compilationUnit) {
                for (String imported : opaque) {
                    if (name.equals(imported) || name.startsWith(imported + ".")
                            || name.startsWith(imported + "$")) {
                        ClassNode stub = new ClassNode(name, Modifier.PUBLIC, ClassHelper.OBJECT_TYPE);
                        return new LookupResult(null, stub);
                    }
                }
                return super.resolveName(name, compilationUnit);
            }
        });
        unit.compile(Phases.CLASS_GENERATION); // imports, names, types, bytecode

        List<String> calls = new ArrayList<>();
        Map<String, Integer> readNames = new LinkedHashMap<>();
        Set<String> assignedNames = new LinkedHashSet<>();
        for (ModuleNode module : unit.getAST().getModules()) {
            for (ClassNode classNode : module.getClasses()) {
                visit(classNode, module.getContext(), calls, readNames, assignedNames);
            }
        }
        List<String> undeclared = new ArrayList<>();
        for (Map.Entry<String, Integer> entry : readNames.entrySet()) {
            if (assignedNames.contains(entry.getKey())) {
                continue;
            }
            if (opaqueStaticStar) {
                // May be a static field of the QuPath class imported with "import static ...*":
                // reported like the calls, for the caller to check against QuPath's fields.
                calls.add("field " + entry.getKey() + " " + entry.getValue());
            } else {
                undeclared.add("line " + entry.getValue() + ": " + entry.getKey());
            }
        }
        if (!undeclared.isEmpty()) {
            throw new IllegalStateException("names read but never declared, assigned or imported "
                    + "(a missing import or a misspelt setting?): " + String.join(", ", undeclared));
        }
        return calls;
    }

    static void addIfQupathOnly(Set<String> names, String name) {
        if (qupathOnly(name)) {
            names.add(name);
        }
    }

    /**
     * Collects unqualified calls to methods the class does not define, and the
     * dynamic names (script binding variables) the code reads and assigns.
     */
    static void visit(ClassNode classNode, SourceUnit source, List<String> calls,
            Map<String, Integer> readNames, Set<String> assignedNames) {
        ClassCodeVisitorSupport visitor = new ClassCodeVisitorSupport() {
            @Override
            protected SourceUnit getSourceUnit() {
                return source;
            }

            @Override
            public void visitMethodCallExpression(MethodCallExpression call) {
                String name = call.getMethodAsString();
                if (call.isImplicitThis() && name != null && call.getLineNumber() > 0
                        && !defines(classNode, name) && !GROOVY_BUILTINS.contains(name)) {
                    calls.add("method " + name + " " + call.getLineNumber());
                }
                super.visitMethodCallExpression(call);
            }

            @Override
            public void visitBinaryExpression(BinaryExpression expression) {
                Expression left = expression.getLeftExpression();
                if (expression.getOperation().getText().equals("=") && left instanceof VariableExpression
                        && ((VariableExpression) left).getAccessedVariable() instanceof DynamicVariable) {
                    assignedNames.add(((VariableExpression) left).getName());
                    expression.getRightExpression().visit(this);
                    return;
                }
                super.visitBinaryExpression(expression);
            }

            @Override
            public void visitVariableExpression(VariableExpression expression) {
                if (expression.getAccessedVariable() instanceof DynamicVariable
                        && expression.getLineNumber() > 0) {
                    readNames.putIfAbsent(expression.getName(), expression.getLineNumber());
                }
                super.visitVariableExpression(expression);
            }
        };
        visitor.visitClass(classNode);
    }

    /** Whether the class, an outer class or a superclass declares a method of that name. */
    static boolean defines(ClassNode classNode, String name) {
        for (ClassNode c = classNode; c != null; c = c.getOuterClass()) {
            for (ClassNode s = c; s != null; s = s.getSuperClass()) {
                if (!s.getMethods(name).isEmpty()) {
                    return true;
                }
            }
        }
        return false;
    }
}
