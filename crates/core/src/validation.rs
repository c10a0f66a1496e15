//! Field errors as Kubernetes reports them (`field.Error`), and the validation shared by all kinds
//! (object names, labels, annotations).
